"""The hot path's keep-alive HTTP/1.1 client (lambdas/adapters/http1.py), against real servers.

Contracts checked (RFC 9112, HTTP/1.1):
- a response body is delimited by Content-Length, by chunked transfer coding (section 7.1, chunk
  extensions and trailer fields included) or by the close of the connection (section 6.3); 1xx
  interim responses come before the final one (RFC 9110, section 15.2); 204 has no body;
- a persistent connection is reused for the next request, from any thread, and not after
  `Connection: close`, an HTTP/1.0 answer or a body left unread;
- a kept connection the server has closed while idle is replaced, and a request the server drops on a
  reused connection before answering is made once more on a new one (never on a fresh one);
- a refused connection, a read timeout and a garbled answer raise NoAnswer, saying whether the request
  may have reached the server; a line break inside a header value is refused before anything is sent;
- TLS verifies the server against the given CA bundle.

The scripted servers are real sockets on loopback; the uvicorn one is the server the local stand-ins run.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lambdas.adapters.http1 import NoAnswer, Origin

Script = Callable[[socket.socket, int], None]  # (client socket, connection number)


def read_request(sock: socket.socket) -> bytes:
    """One request (head and Content-Length body) from `sock`; b"" at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


@contextmanager
def scripted(script: Script, tls: ssl.SSLContext | None = None) -> Iterator[tuple[str, list[bytes]]]:
    """A server on loopback that runs `script` for each connection; yields its URL and the requests
    it read (appended by scripts through `seen`)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        number = 0
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            number += 1
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    sock.close()
                    continue

            def run(s: socket.socket = sock, n: int = number) -> None:
                try:
                    script(s, n)
                except OSError:
                    pass
                finally:
                    s.close()

            threading.Thread(target=run, daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}", seen
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def answer_each(responses: Callable[[bytes], bytes], seen: list[bytes], close_after: int = 0) -> Script:
    """Answer every request on the connection with `responses(request)`; close after that many."""

    def script(sock: socket.socket, number: int) -> None:
        served = 0
        while request := read_request(sock):
            seen.append(request)
            sock.sendall(responses(request))
            served += 1
            if close_after and served >= close_after:
                return

    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Amzn-RequestId: abc\r\n\r\nok"


def counting(script: Script, connections: list[int]) -> Script:
    """`script`, noting the number of each connection it serves in `connections`."""

    def counted(sock: socket.socket, number: int) -> None:
        connections.append(number)
        script(sock, number)

    return counted


def test_a_body_by_content_length_and_one_connection_for_many_requests() -> None:
    connections: list[int] = []
    seen: list[bytes] = []
    with scripted(counting(answer_each(lambda r: OK, seen), connections)) as (url, _):
        origin = Origin(url)
        for i in range(5):
            response = origin.request("POST", f"/dev/@connections/c{i}", b"{}", {"X-Amz-Date": "x"})
            assert (response.status, response.data) == (200, b"ok")
            assert response.headers["x-amzn-requestid"] == "abc"
    assert connections == [1]
    assert len(seen) == 5
    head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST /dev/@connections/c0 HTTP/1.1"
    assert f"Host: 127.0.0.1:{url.rsplit(':', 1)[1]}".encode() in head
    assert b"Content-Length: 2" in head and b"X-Amz-Date: x" in head
    assert seen[0].endswith(b"\r\n\r\n{}")


def test_chunked_bodies_arriving_in_pieces_with_extensions_and_trailers() -> None:
    body = b"data: one\n\ndata: two\n\n"
    wire = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"b;ext=1\r\ndata: one\n\n\r\nb\r\ndata: two\n\n\r\n0\r\nX-Trailer: t\r\n\r\n")

    def script(sock: socket.socket, number: int) -> None:
        while read_request(sock):
            if number == 1:
                for i in range(0, len(wire), 3):  # three bytes at a time: every boundary is crossed
                    sock.sendall(wire[i:i + 3])
                    time.sleep(0.001)
            else:
                sock.sendall(wire)

    with scripted(script) as (url, _):
        origin = Origin(url)
        exchange = origin.open("POST", "/invocations", b"{}")
        assert exchange.status == 200
        pieces = list(exchange.pieces())
        assert b"".join(pieces) == body
        assert len(pieces) > 2  # handed out as they came, not at the end
        assert all(p in b"data: one\n\n" or p in b"data: two\n\n" for p in pieces)  # never two chunks in one
        assert origin.request("POST", "/invocations", b"{}").data == body  # the connection was kept
        origin.close()
        whole = list(origin.open("POST", "/invocations", b"{}").pieces())
        assert whole == [b"data: one\n\n", b"data: two\n\n"]  # one read, still one piece per chunk


def test_a_body_delimited_by_close_an_interim_answer_and_no_content() -> None:
    def script(sock: socket.socket, number: int) -> None:
        read_request(sock)
        if number == 1:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            read_request(sock)
            sock.sendall(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        else:
            sock.sendall(OK)

    with scripted(script) as (url, _):
        origin = Origin(url)
        first = origin.request("POST", "/", b"")
        assert (first.status, first.data) == (204, b"")
        second = origin.request("POST", "/", b"")  # same connection, then closed by the server
        assert (second.status, second.data) == (200, b"until the end")
        assert origin.request("POST", "/", b"").data == b"ok"  # a new connection


def test_a_connection_closed_while_idle_or_as_the_request_is_sent_is_replaced() -> None:
    seen: list[bytes] = []
    with scripted(answer_each(lambda r: OK, seen, close_after=1)) as (url, _):
        origin = Origin(url)
        for _ in range(3):  # each connection serves one request and is closed while idle
            assert origin.request("POST", "/", b"x").status == 200
            time.sleep(0.05)
    assert len(seen) == 3

    def drops_second(sock: socket.socket, number: int) -> None:
        read_request(sock)
        sock.sendall(OK)
        read_request(sock)  # the second request on this connection is read and dropped unanswered
        sock.shutdown(socket.SHUT_RDWR)

    with scripted(drops_second) as (url, _):
        origin = Origin(url)
        assert origin.request("POST", "/", b"x").status == 200
        assert origin.request("POST", "/", b"x").status == 200  # retried once, on a new connection
        assert origin.request("POST", "/", b"x").status == 200
        with pytest.raises(NoAnswer) as dropped:  # a request that must not run twice is not retried
            origin.request("POST", "/", b"x", retry_dropped=False)
        assert dropped.value.sent is True


def test_connection_close_and_bytes_sent_while_idle_end_a_connection() -> None:
    connections: list[int] = []

    def script(sock: socket.socket, number: int) -> None:
        connections.append(number)
        read_request(sock)
        if number == 1:  # says close, but leaves the socket open and never answers again
            sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nfirst")
            time.sleep(2)
        elif number == 2:  # answers, then sends an answer nobody asked for
            sock.sendall(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
            time.sleep(2)
        else:
            sock.sendall(OK)

    with scripted(script) as (url, _):
        origin = Origin(url, read_timeout_s=1)
        assert origin.request("POST", "/", b"").data == b"first"
        assert origin.request("POST", "/", b"").data == b"ok"
        time.sleep(0.05)
        assert origin.request("POST", "/", b"").data == b"ok"  # not "stale"
    assert connections == [1, 2, 3]


def test_a_fresh_connection_dropped_before_an_answer_is_not_retried() -> None:
    calls: list[int] = []

    def drops(sock: socket.socket, number: int) -> None:
        calls.append(number)
        read_request(sock)
        sock.shutdown(socket.SHUT_RDWR)

    with scripted(drops) as (url, _), pytest.raises(NoAnswer) as caught:
        Origin(url).request("POST", "/", b"x")
    assert caught.value.sent is True
    assert calls == [1]


def test_refused_timed_out_and_garbled_answers_raise_no_answer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(NoAnswer) as refused:
        Origin(f"http://127.0.0.1:{port}").request("POST", "/", b"")
    assert refused.value.sent is False

    requests: list[int] = []

    def silent(sock: socket.socket, number: int) -> None:
        read_request(sock)
        requests.append(number)
        time.sleep(1.0)

    with scripted(silent) as (url, _):
        started = time.monotonic()
        with pytest.raises(NoAnswer) as timed_out:
            Origin(url, read_timeout_s=0.2).request("POST", "/", b"")
        assert time.monotonic() - started < 0.9
    assert timed_out.value.sent is True
    assert requests == [1]  # a timeout is not retried

    for garbage in (b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"):
        with scripted(answer_each(lambda r, g=garbage: g, [], close_after=1)) as (url, _), \
                pytest.raises(NoAnswer):
            Origin(url).request("POST", "/", b"")


def test_a_stream_left_unread_is_not_reused() -> None:
    connections: list[int] = []

    def script(sock: socket.socket, number: int) -> None:
        connections.append(number)
        while read_request(sock):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234")
            time.sleep(0.05)
            sock.sendall(b"56789")

    with scripted(script) as (url, _):
        origin = Origin(url)
        exchange = origin.open("POST", "/", b"")
        assert exchange.read(3) == b"012"
        assert origin.request("POST", "/", b"").data == b"0123456789"
        assert origin.request("POST", "/", b"").data == b"0123456789"
    assert connections == [1, 2]


def test_line_breaks_in_a_header_or_the_path_are_refused_before_sending() -> None:
    seen: list[bytes] = []
    with scripted(answer_each(lambda r: OK, seen)) as (url, _):
        origin = Origin(url)
        for headers, path in (({"X-A": "1\r\nX-Injected: yes"}, "/"), ({"X-A\n": "1"}, "/"),
                              ({}, "/a HTTP/1.1\r\nX-Injected: yes\r\n\r\nGET /b"), ({}, "/a b")):
            with pytest.raises(ValueError):
                origin.request("POST", path, b"", headers)
        assert origin.request("POST", "/", b"").status == 200
    assert len(seen) == 1


def test_threads_share_the_idle_connections_and_at_most_max_idle_are_kept() -> None:
    connections: list[int] = []
    seen: list[bytes] = []
    with scripted(counting(answer_each(lambda r: OK, seen), connections)) as (url, _):
        origin = Origin(url, max_idle=3)
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                barrier.wait()
                for _ in range(20):
                    assert origin.request("POST", "/", b"x").data == b"ok"
            except BaseException as exc:  # reported below
                errors.append(exc)

        def run_threads() -> None:
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)

        run_threads()
        assert not errors
        opened = len(connections)
        barrier.reset()
        for _ in range(10):  # threads that never ran before take the connections the others left
            threading.Thread(target=lambda: origin.request("POST", "/", b"x")).start()
            time.sleep(0.02)
        time.sleep(0.2)
        assert len(connections) == opened
        assert len(origin._idle) <= 3
    assert len(seen) == 90


def _certificate(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_verifies_the_server_against_the_given_bundle(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    seen: list[bytes] = []
    with scripted(answer_each(lambda r: OK, seen), tls=server) as (url, _):
        origin = Origin(url, ca_certs=str(cert))
        assert origin.host == url.removeprefix("https://")
        assert [origin.request("POST", "/", b"x").data for _ in range(3)] == [b"ok"] * 3
        with pytest.raises(NoAnswer) as untrusted:  # the system's bundle does not know this server
            Origin(url).request("POST", "/", b"x")
        assert untrusted.value.sent is False
    assert len(seen) == 3


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_server_that_stalls_mid_answer_or_stops_reading_times_out(tmp_path: Path, tls: bool) -> None:
    """Each read and each write waits at most the read timeout, on plain TCP (where the kernel keeps
    the timeout, SO_RCVTIMEO and SO_SNDTIMEO) as over TLS (Python's timeouts)."""
    server: ssl.SSLContext | None = None
    ca: str | None = None
    if tls:
        cert, key = _certificate(tmp_path)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
        ca = str(cert)

    def stalls(sock: socket.socket, number: int) -> None:
        read_request(sock)
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        time.sleep(1.5)

    with scripted(stalls, tls=server) as (url, _):
        exchange = Origin(url, read_timeout_s=0.3, ca_certs=ca).open("POST", "/", b"")
        pieces = exchange.pieces()
        assert next(pieces) == b"one"  # the first chunk, then nothing more
        started = time.monotonic()
        with pytest.raises(NoAnswer, match="timed out"):
            next(pieces)
        assert 0.25 < time.monotonic() - started < 1.2

    def deaf(sock: socket.socket, number: int) -> None:
        time.sleep(2.5)  # reads nothing: the request fills the socket buffers and the write stalls

    with scripted(deaf, tls=server) as (url, _):
        started = time.monotonic()
        with pytest.raises(NoAnswer, match="timed out") as stopped:
            Origin(url, read_timeout_s=0.3, ca_certs=ca).request("POST", "/", b"x" * (64 << 20))
        assert time.monotonic() - started < 2.0
        assert stopped.value.sent is True


def test_against_uvicorn_with_its_idle_timeout() -> None:
    import uvicorn

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": body[::-1], "more_body": True})
        await send({"type": "http.response.body", "body": b"!"})

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=1,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        origin = Origin(f"http://127.0.0.1:{port}")
        assert origin.request("POST", "/", b"abc").data == b"cba!"  # chunked, as uvicorn streams it
        time.sleep(1.5)  # uvicorn closes the idle connection
        assert origin.request("POST", "/", b"xyz").data == b"zyx!"
    finally:
        server.should_exit = True
        thread.join(5)
