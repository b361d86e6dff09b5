"""$default: frames no route matched (non-JSON, no or unknown action) get one clear error frame."""

from __future__ import annotations

from lambdas import protocol
from lambdas.errors import BadRequest
from lambdas.handlers._ws import WsRequest, ws_route


@ws_route
def handler(req: WsRequest) -> protocol.ServerFrame:
    protocol.parse_client_frame(req.body)  # raises the precise BadRequest for this frame
    raise BadRequest("This action is not routed here.")
