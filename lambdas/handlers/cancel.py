"""cancel: ask the worker to stop a generation; it ends the stream with finishReason "cancelled"."""

from __future__ import annotations

from lambdas import protocol
from lambdas.errors import BadRequest
from lambdas.handlers._ws import WsRequest, ws_route
from lambdas.services.chat import ChatService


@ws_route
def handler(req: WsRequest) -> protocol.ServerFrame | None:
    frame = protocol.parse_client_frame(req.body)
    if not isinstance(frame, protocol.Cancel):
        raise BadRequest("This route takes cancel frames.")
    return ChatService(req.deps).cancel(req.identity, frame)
