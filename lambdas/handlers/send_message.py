"""sendMessage: validate, persist the user message, ack, enqueue the generation; well inside 29 s."""

from __future__ import annotations

from lambdas import protocol
from lambdas.errors import BadRequest
from lambdas.handlers._ws import WsRequest, ws_route
from lambdas.services.chat import ChatService


@ws_route
def handler(req: WsRequest) -> protocol.ServerFrame | None:
    frame = protocol.parse_client_frame(req.body)
    if not isinstance(frame, protocol.SendMessage):
        raise BadRequest("This route takes sendMessage frames.")
    return ChatService(req.deps).accept(req.identity, frame, req.connection_id)
