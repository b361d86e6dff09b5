"""Timeouts the kernel keeps, for the hot path's blocking sockets.

A Python socket timeout (`settimeout`) turns every recv and send into a poll() and then the call,
each releasing and retaking the GIL. With fifty threads streaming in one process (a Lambda host
serving fifty answers), that second hand-off per read cost about a third of a reading thread's CPU,
and about a fifth of a Redis round trip's (docs/benchmarks.md, "Hot path"). The kernel's own timeouts
on a blocking socket (SO_RCVTIMEO, SO_SNDTIMEO) bound each read and write the same way with one
hand-off: a call the kernel timed out raises BlockingIOError.

Plain TCP and Unix sockets only, on Linux and macOS: the ssl module retries a read that the kernel
timed out on a blocking socket, so TLS keeps Python's timeouts.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import sys
from typing import Any

SUPPORTED = sys.platform.startswith(("linux", "darwin"))
_poll = getattr(select, "poll", None)  # select() cannot watch a descriptor above 1023


def readable(fileobj: Any) -> bool:
    """Whether a read of `fileobj` (a socket or a descriptor) would not wait now: data has come, or
    the peer closed. An idle connection that is readable was closed by its server (or holds what
    nobody asked for)."""
    if _poll is None:  # no poll() (Windows): select() takes the few sockets a laptop run has
        return bool(select.select([fileobj], [], [], 0)[0])
    poller = _poll()
    poller.register(fileobj, select.POLLIN)
    return bool(poller.poll(0))


def applies(sock: socket.socket) -> bool:
    """Whether `sock` can time out in the kernel (plain, not TLS, on a platform that has it)."""
    return SUPPORTED and not isinstance(sock, ssl.SSLSocket)


def set_kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make `sock` blocking, each read and each write bounded by `seconds` (at least a microsecond: a
    zero timeval would mean no timeout at all)."""
    micros = max(1, round(seconds * 1_000_000))
    value = struct.pack("ll", micros // 1_000_000, micros % 1_000_000)  # struct timeval
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
