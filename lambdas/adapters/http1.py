"""A keep-alive HTTP/1.1 client for the hot path's requests of one known shape.

Every chat makes about a dozen small HTTP exchanges from the Lambda code (the `@connections` posts,
the SQS send) and reads its model stream token by token. Through urllib3 each exchange cost 329-704
us of the calling thread's CPU on this project's machine, through `http.client` alone 278-452 us
(its response headers go through the `email` parser), and through this module 84-104 us (the same
request, the clients interleaved, a throwaway loop against a uvicorn server; docs/benchmarks.md,
"Hot path"). The requests here are always the same shape, so the general machinery buys nothing:

- one origin (scheme, host, port) per `Origin`, whose idle connections any thread may take;
- TLS with the CA bundle the caller gives (boto3's);
- a request is the head and a bytes body with `Content-Length`, written with one `sendall`;
- a response body is delimited by `Content-Length`, by chunked transfer coding, or by the close of
  the connection (RFC 9112, section 6.3); 1xx heads are skipped, 204 and 304 have no body;
- no proxies, redirects, cookies or compression: the endpoints here (API Gateway, SQS, the local
  stand-ins, a model container) use none, and each caller falls back or fails clearly on an answer
  it does not expect.

A connection kept from an earlier exchange may have been closed by the server while idle (uvicorn
closes idle ones after 5 s). It is checked before reuse (readable while idle means closed), and when
the server still closes it as the request is written, before any byte of an answer, the request is
made once more on a new connection, as urllib3 and Go's net/http do for a reused connection: a
server that closes an idle connection has not read the request on it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from lambdas.adapters import sockets

MAX_HEAD_BYTES = 64 * 1024
_RECV = 65536
_NO_BODY_STATUS = frozenset({204, 304})


class NoAnswer(Exception):
    """No complete answer: refused, reset, timed out, or not HTTP/1.1. `sent` is False only when the
    request cannot have reached the server (the connection was never made)."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # by lower-case name; repeated headers joined with ", "
    data: bytes


class _Closed(Exception):
    """The server closed the connection (or reset it) before the answer was complete."""


class _Connection:
    __slots__ = ("buf", "kernel_timeouts", "sock", "timeout")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.kernel_timeouts = sockets.applies(sock)  # one GIL hand-off per read (sockets.py)
        self.timeout: float | None = None

    def set_timeout(self, seconds: float) -> None:
        """At most `seconds` for each read and for each write of the request."""
        if seconds == self.timeout:
            return
        if self.kernel_timeouts:
            sockets.set_kernel_timeouts(self.sock, seconds)
        else:
            self.sock.settimeout(seconds)
        self.timeout = seconds

    def fill(self) -> None:
        try:
            data = self.sock.recv(_RECV)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as exc:
            raise _Closed() from exc
        except BlockingIOError:  # the kernel's receive timeout (sockets.py)
            raise TimeoutError("timed out") from None
        if not data:
            raise _Closed()
        self.buf += data

    def idle_but_closed(self) -> bool:
        """Readable while idle: the server closed it (or sent what nobody asked for)."""
        if self.buf:  # bytes beyond the last answer came with it
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        return sockets.readable(self.sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Exchange:
    """A response whose head has been read; its body is read with `body`, `pieces` or `read`.
    The connection goes back to the idle ones once the body is read whole and the server keeps
    it open; `close` (or an error) discards it."""

    def __init__(self, origin: Origin, conn: _Connection, status: int, headers: dict[str, str],
                 framing: str, length: int) -> None:
        self.status = status
        self.headers = headers
        self._origin = origin
        self._conn: _Connection | None = conn
        self._framing = framing  # "length", "chunked" or "close"
        self._left = length  # bytes of body (length) or of the current chunk (chunked) still to come
        self._chunk_tail = False  # chunked: the CRLF after a chunk's data is still to be read
        self._keep = headers.get("connection", "").lower() != "close"

    def pieces(self, idle_timeout_s: float | None = None) -> Iterator[bytes]:
        """The body as it arrives: each chunk of a chunked answer as one piece (its data may come in
        several when it spans reads), otherwise what each read from the socket brought. With
        `idle_timeout_s`, once the first piece has come each later read waits at most that long (a
        stream that stalls midway), where the first waits the exchange's read timeout (a model's
        first token may be long in coming)."""
        conn = self._conn
        if conn is None:
            return
        try:
            while True:
                piece, finished, starved = self._decode(conn)
                if piece:
                    if idle_timeout_s is not None:
                        conn.set_timeout(idle_timeout_s)  # a no-op once set
                    yield piece
                if finished:
                    break
                if starved:
                    conn.fill()
        except _Closed:
            self.close()
            if self._framing != "close":
                raise NoAnswer("The server closed the connection in the middle of an answer.",
                               sent=True) from None
            return  # a body delimited by the close of the connection: this is its end
        except (TimeoutError, OSError) as exc:
            self.close()
            raise NoAnswer(f"The answer stopped: {exc}", sent=True) from exc
        except BaseException:
            self.close()  # the caller stopped reading (GeneratorExit) or failed: the rest is unread
            raise
        self._release()

    def body(self) -> bytes:
        return b"".join(self.pieces())

    def read(self, limit: int) -> bytes:
        """At most `limit` bytes of the body (for an error's detail); the rest is discarded."""
        out = bytearray()
        for piece in self.pieces():
            out += piece
            if len(out) >= limit:
                self.close()
                break
        return bytes(out[:limit])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._keep and self._framing != "close":
                self._origin._give_back(conn)
            else:
                conn.close()

    def _decode(self, conn: _Connection) -> tuple[bytes, bool, bool]:
        """Take the next piece of the body from the buffer: (data, whether the body is complete,
        whether more must be read from the socket first)."""
        buf = conn.buf
        if self._framing == "length":
            take = min(self._left, len(buf))
            piece = bytes(buf[:take])
            del buf[:take]
            self._left -= take
            return piece, self._left == 0, self._left > 0
        if self._framing == "close":
            piece = bytes(buf)
            buf.clear()
            return piece, False, True
        while True:  # chunked (RFC 9112, section 7.1)
            if self._left:
                take = min(self._left, len(buf))
                piece = bytes(buf[:take])
                del buf[:take]
                self._left -= take
                if self._left:
                    return piece, False, True
                self._chunk_tail = True
                return piece, False, False
            if self._chunk_tail:
                if len(buf) < 2:
                    return b"", False, True
                if buf[:2] != b"\r\n":
                    raise NoAnswer("The server's chunked answer is malformed.", sent=True)
                del buf[:2]
                self._chunk_tail = False
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 1024:
                    raise NoAnswer("The server's chunked answer is malformed.", sent=True)
                return b"", False, True
            try:
                size = int(bytes(buf[:end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise NoAnswer("The server's chunked answer is malformed.", sent=True) from None
            if size == 0:  # the last chunk: trailer fields (none, usually), then an empty line
                if buf[end:end + 4] == b"\r\n\r\n":
                    del buf[:end + 4]
                    return b"", True, False
                last = buf.find(b"\r\n\r\n", end + 2)
                if last < 0:
                    return b"", False, True  # parsed again from its size line when more arrives
                del buf[:last + 4]
                return b"", True, False
            del buf[:end + 2]
            self._left = size


class Origin:
    """`url`'s scheme, host and port (requests give their own path). `ca_certs` is the bundle TLS
    verifies an https server against; an http origin ignores it."""

    def __init__(self, url: str, *, connect_timeout_s: float = 2.0, read_timeout_s: float = 5.0,
                 ca_certs: str | None = None, max_idle: int = 64) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Not an http(s) URL: {url!r}.")
        self.hostname = parts.hostname
        default_port = 443 if parts.scheme == "https" else 80
        self.port = parts.port or default_port
        # The Host header (and what a signature covers): no default port.
        self.host = self.hostname + (f":{self.port}" if self.port != default_port else "")
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._tls = ssl.create_default_context(cafile=ca_certs) if parts.scheme == "https" else None
        # Idle connections, the most recently used last: any thread takes one (a Lambda worker's batch
        # threads live for one invocation; their connections outlive them here).
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        self.max_idle = max_idle

    def request(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
                *, read_timeout_s: float | None = None, retry_dropped: bool = True) -> Response:
        exchange = self.open(method, path, body, headers, read_timeout_s=read_timeout_s,
                             retry_dropped=retry_dropped)
        return Response(exchange.status, exchange.headers, exchange.body())

    def open(self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None,
             *, read_timeout_s: float | None = None, retry_dropped: bool = True) -> Exchange:
        """Send the request and read the answer's head; raises NoAnswer. `retry_dropped=False` for a
        request that must not run twice: a kept connection closed before any answer then raises."""
        data = self._encode(method, path, body, headers or {})
        timeout = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        sent = False
        for attempt in (1, 2):
            conn = self._take()
            reused = conn is not None
            if conn is None:
                try:
                    conn = self._connect()
                except NoAnswer as exc:
                    exc.sent = sent  # a retry that cannot connect: the first attempt was sent
                    raise
            try:
                conn.set_timeout(timeout)
                sent = True
                conn.sock.sendall(data)
                return self._head(conn, method)
            except (_Closed, BrokenPipeError, ConnectionResetError) as exc:
                conn.close()
                if retry_dropped and reused and attempt == 1 and not conn.buf:  # closed while idle
                    continue
                raise NoAnswer("The server closed the connection before answering.", sent=True) from exc
            except BlockingIOError as exc:  # the kernel's send timeout: the server reads nothing
                conn.close()
                raise NoAnswer(f"No answer from {self.host}: timed out", sent=True) from exc
            except (TimeoutError, OSError) as exc:
                conn.close()
                raise NoAnswer(f"No answer from {self.host}: {exc}", sent=True) from exc
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the idle connections (those in use close when their exchange ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _encode(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(lines)
        # The first and last lines hold two line breaks each, the others one: any more came from a value.
        if head.count("\r") != len(lines) + 2 or head.count("\n") != len(lines) + 2 or " " in path:
            raise ValueError("A request line or header holds a line break or a space where none may be.")
        return head.encode("latin-1") + body

    def _take(self) -> _Connection | None:
        """The most recently used idle connection the server has not closed, if any."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if not conn.idle_but_closed():
                return conn
            conn.close()

    def _give_back(self, conn: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection((self.hostname, self.port), timeout=self.connect_timeout_s)
        except OSError as exc:
            raise NoAnswer(f"Cannot connect to {self.host}: {exc}", sent=False) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self.hostname)
        except OSError as exc:
            sock.close()
            raise NoAnswer(f"Cannot connect to {self.host}: {exc}", sent=False) from exc
        return _Connection(sock)

    def _head(self, conn: _Connection, method: str) -> Exchange:
        while True:
            while (end := conn.buf.find(b"\r\n\r\n")) < 0:
                if len(conn.buf) > MAX_HEAD_BYTES:
                    raise NoAnswer("The server's answer has a head too large to read.", sent=True)
                conn.fill()
            head = bytes(conn.buf[:end]).decode("latin-1")
            del conn.buf[:end + 4]
            status_line, *lines = head.split("\r\n")
            version, _, rest = status_line.partition(" ")
            try:
                status = int(rest[:3])
            except ValueError:
                status = 0
            if not version.startswith("HTTP/1.") or not 100 <= status <= 599:
                raise NoAnswer(f"Not an HTTP/1.1 answer: {status_line[:80]!r}.", sent=True)
            if status >= 200:
                break  # 1xx: an interim answer, the real one follows
        headers: dict[str, str] = {}
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep:
                raise NoAnswer("The server's answer has a malformed header line.", sent=True)
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            headers.setdefault("connection", "close")
        if method == "HEAD" or status in _NO_BODY_STATUS:
            return Exchange(self, conn, status, headers, "length", 0)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return Exchange(self, conn, status, headers, "chunked", 0)
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise NoAnswer("The server's answer has an unreadable Content-Length.", sent=True) from None
            return Exchange(self, conn, status, headers, "length", length)
        return Exchange(self, conn, status, headers, "close", 0)
