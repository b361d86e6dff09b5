"""resume: replay the deltas a client missed after `afterSeq`, then keep it on the live stream."""

from __future__ import annotations

from lambdas import protocol
from lambdas.errors import BadRequest
from lambdas.handlers._ws import WsRequest, ws_route
from lambdas.services.chat import ChatService


@ws_route
def handler(req: WsRequest) -> None:
    frame = protocol.parse_client_frame(req.body)
    if not isinstance(frame, protocol.Resume):
        raise BadRequest("This route takes resume frames.")
    ChatService(req.deps).resume(req.identity, frame, req.connection_id)
