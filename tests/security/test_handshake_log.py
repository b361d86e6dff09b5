"""A refused handshake is one info line, never a traceback (issue 11): the real gateway emulator on a
real uvicorn server, a real WebSocket client, an authorizer that refuses as API Gateway's contract
says (raising "Unauthorized" -> 401)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import websockets

from chatstack.local.gateway import GatewayEmulator


def refuse(event: dict[str, Any], context: Any) -> dict[str, Any]:
    raise Exception("Unauthorized")


async def test_a_refused_handshake_logs_one_info_line(
    serve_routes: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = GatewayEmulator(routes={}, authorizer=refuse)
    base = await serve_routes(lambda _: gateway.routes, **gateway.server_options)
    caplog.set_level(logging.DEBUG, logger="chatstack.local.gateway")
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(base.replace("http://", "ws://") + gateway.ws_path):
            pass
    assert refused.value.response.status_code == 401
    records = [r for r in caplog.records if r.name == "chatstack.local.gateway"]
    lines = [(r.levelname, r.getMessage()) for r in records]
    assert lines == [("INFO", "handshake refused: 401 from 127.0.0.1")]
    assert all(r.exc_info is None for r in records)
