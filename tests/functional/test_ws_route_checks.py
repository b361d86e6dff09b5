"""What every WebSocket route checks before its own work (lambdas/handlers/_ws.py).

A WebSocket connection is authorized once, at $connect (API Gateway runs the authorizer only then),
and may last two hours (wiring.MAX_CONNECTION_S): each later frame checks that its credential has not
expired since, nor, for an API key, been revoked. Real PostgreSQL and Redis; the route handlers run on
the documented message event (tests/fixtures/events), with @connections as an in-process transport.

Found by an attack: after a key was revoked, or a token passed its `exp`, REST and new handshakes got
401 while a connection opened before still got an `ack` and a `done` for new messages."""

from __future__ import annotations

import base64
import copy
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatstack.local.lambda_context import LocalLambdaContext
from lambdas import protocol, wiring
from lambdas.adapters.auth import Identity
from lambdas.config import Settings
from lambdas.handlers import ping
from lambdas.runtime import Deps, set_deps
from lambdas.services.api_keys import ApiKeyService

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "events" / "apigw_websocket_message.json"


class Posts:
    def __init__(self) -> None:
        self.frames: list[protocol.ServerFrame] = []

    def post(self, connection_id: str, data: str) -> bool:
        self.frames.append(protocol.parse_server_frame(data))
        return True


@pytest.fixture
def deps(pg_url: str, redis_url: str) -> Iterator[Deps]:
    d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url, auth_leeway_s=30))
    d.__dict__["connections"] = Posts()
    set_deps(d)
    yield d
    set_deps(None)


def ping_as(d: Deps, identity: Identity, *, binary: bool = False) -> protocol.ServerFrame:
    event: dict[str, Any] = copy.deepcopy(json.loads(FIXTURE.read_text()))
    event["requestContext"]["routeKey"] = "ping"
    event["requestContext"]["authorizer"] = identity.to_context()  # what $connect's authorizer returned
    event["body"] = json.dumps({"action": "ping"})
    if binary:  # API Gateway passes a binary frame base64-encoded (to $default: no route expression holds)
        event["body"] = base64.b64encode(event["body"].encode()).decode()
        event["isBase64Encoded"] = True
    ping.handler(event, LocalLambdaContext(wiring.PING))
    posts: Posts = d.__dict__["connections"]
    return posts.frames[-1]


def person(expires_at: int) -> Identity:
    return Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="alice", scopes=frozenset({"chat"}),
                    expires_at=expires_at)


def test_a_frame_after_the_connections_token_expired_is_unauthorized(deps: Deps) -> None:
    assert isinstance(ping_as(deps, person(int(time.time()) + 600)), protocol.Pong)
    assert isinstance(ping_as(deps, person(int(time.time()) - 10)), protocol.Pong)  # within the leeway
    late = ping_as(deps, person(int(time.time()) - 60))
    assert isinstance(late, protocol.Error) and late.code == "UNAUTHORIZED" and "expired" in late.message
    assert isinstance(ping_as(deps, person(0)), protocol.Pong)  # no expiry known (an older context)


def test_a_frame_on_a_connection_opened_with_a_key_revoked_since_is_unauthorized(deps: Deps) -> None:
    admin = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="root",
                     scopes=frozenset({"chat", "admin"}))
    keys = ApiKeyService(deps)
    created = keys.create(admin, name="bot", scopes=["chat"], expires_in_days=None)
    other = keys.create(admin, name="other bot", scopes=["chat"], expires_in_days=None)
    opened = keys.authenticate(created.key)  # at $connect
    assert opened.method == "api_key" and isinstance(ping_as(deps, opened), protocol.Pong)
    keys.revoke(admin.tenant_id, created.row.id)
    refused = ping_as(deps, opened)
    assert isinstance(refused, protocol.Error) and refused.code == "UNAUTHORIZED"
    assert "revoked" in refused.message
    assert isinstance(ping_as(deps, keys.authenticate(other.key)), protocol.Pong)  # the tenant's other key


def test_an_api_key_identity_carries_its_expiry(deps: Deps) -> None:
    admin = Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="root",
                     scopes=frozenset({"chat", "admin"}))
    created = ApiKeyService(deps).create(admin, name="short", scopes=["chat"], expires_in_days=1)
    identity = ApiKeyService(deps).authenticate(created.key)
    assert abs(identity.expires_at - (time.time() + 86_400)) < 120
    assert Identity.from_context(identity.to_context()) == identity


def test_a_binary_frame_is_refused_as_binary_not_as_bad_json(deps: Deps) -> None:
    """Found by an attack: a binary frame holding valid JSON was answered "The frame is not valid JSON"."""
    refused = ping_as(deps, person(0), binary=True)
    assert isinstance(refused, protocol.Error) and refused.code == "BAD_REQUEST"
    assert "Binary frames" in refused.message
