"""ping: a heartbeat that also keeps the connection inside API Gateway's 10-minute idle limit."""

from __future__ import annotations

from lambdas import protocol
from lambdas.handlers._ws import WsRequest, ws_route


@ws_route
def handler(req: WsRequest) -> protocol.ServerFrame:
    protocol.parse_client_frame(req.body)
    return protocol.Pong()
