"""How the runtime invokes functions in its Lambda hosts when one is gone, against real sockets.

The hosts here are small real HTTP servers that answer the Lambda Invoke API as a host does (200 and
the handler's JSON result); what is under test is the caller's side. The contract followed is
Lambda's: an invocation that never reached an execution environment may go to another one, an
invocation whose connection broke after it was sent is a failed invocation (the handler may have run)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from chatstack.local.lambda_host import HostPool, HostsUnavailable, remote_functions
from lambdas import wiring
from lambdas.adapters.http1 import NoAnswer


class Host:
    """A real HTTP server on 127.0.0.1: answers invocations, or drops them after reading (`drop`)."""

    def __init__(self, drop: bool = False) -> None:
        self.calls: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                host.calls.append(self.path)
                if drop:  # the process died mid-invocation
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = json.dumps({"echo": json.loads(body)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def refusing_url() -> str:
    """A port nothing listens on (bound, then closed): connections to it are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    made: list[Host] = []
    yield made
    for h in made:
        h.close()


def test_an_invocation_a_host_refuses_runs_on_another_and_the_host_leaves_rotation(hosts: list[Host]) -> None:
    live = Host()
    hosts.append(live)
    pool = HostPool([refusing_url(), live.url])
    ping = remote_functions(pool)[wiring.PING.name]
    # GIVEN host 0 refuses; WHEN invoked three times (host 0 is tried first: fewest in flight, first)
    results = [ping({"n": i}) for i in range(3)]
    # THEN every invocation ran once, on host 1, and host 0 is out of rotation
    assert results == [{"echo": {"n": i}} for i in range(3)]
    assert len(live.calls) == 3 and pool.up == [False, True]


def test_a_restarted_host_is_back_in_rotation_at_its_new_url(hosts: list[Host]) -> None:
    first, second = Host(), Host()
    hosts += [first, second]
    pool = HostPool([refusing_url(), first.url])
    ping = remote_functions(pool)[wiring.PING.name]
    ping({})
    pool.replace(0, second.url)  # what the supervisor does once the host is ready again
    ping({})
    assert pool.up == [True, True] and len(second.calls) == 1


def test_a_connection_dropped_mid_invocation_is_a_failed_invocation_not_retried(hosts: list[Host]) -> None:
    dropping, other = Host(drop=True), Host()
    hosts += [dropping, other]
    worker = remote_functions(HostPool([dropping.url, other.url]))[wiring.WORKER.name]
    with pytest.raises(NoAnswer) as dropped:
        worker({"Records": []})
    assert dropped.value.sent
    assert len(dropping.calls) == 1 and other.calls == []  # the handler may have run: never twice


def test_with_every_host_refusing_the_invocation_fails_after_trying_each_once() -> None:
    pool = HostPool([refusing_url(), refusing_url()])
    with pytest.raises(HostsUnavailable):
        remote_functions(pool)[wiring.PING.name]({})
    assert pool.up == [False, False] and pool.in_flight == [0, 0]
