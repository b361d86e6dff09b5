"""The REST API in-process (FastAPI's TestClient) over real PostgreSQL and Redis, with tokens signed by
the development issuer and verified through its JWKS served over real HTTP (contract: OIDC `jwks_uri`).

A browser user, a service with an API key and a finance user each get what they should and nothing
more; another tenant's objects are 404; bad input is a 4xx that writes nothing; and schemathesis,
driven by the published OpenAPI, finds no 5xx and no response that breaks its schema."""

from __future__ import annotations

import csv
import io
import socket
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from chatstack.local.identity import AUDIENCE, ISSUER, DevIdentity
from lambdas.adapters import chat_repo
from lambdas.api.app import create_app
from lambdas.config import Settings
from lambdas.runtime import Deps, set_deps
from lambdas.services.models import offered
from tests.helpers.jwks import serve_jwks

ALL_SCOPES = ("chat", "admin", "finance")


class Api:
    def __init__(self, client: TestClient, identity: DevIdentity, deps: Deps) -> None:
        self.client, self.identity, self.deps = client, identity, deps

    def bearer(self, user: str, tenant: str, *scopes: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + self.identity.mint(user=user, tenant=tenant, scopes=scopes)}


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return create_app()


@pytest.fixture(scope="module")
def api(app: FastAPI, pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    identity = DevIdentity(Path(tmp_path_factory.mktemp("identity")))
    with serve_jwks(identity.jwks()["keys"]) as jwks:
        d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url, auth_issuer=ISSUER,
                          auth_audience=AUDIENCE, auth_algorithms="ES256", auth_jwks_url=jwks.url))
        set_deps(d)
        try:
            with TestClient(app, raise_server_exceptions=False) as client:
                yield Api(client, identity, d)
        finally:
            set_deps(None)
            d.db.close()


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def conversation(api: Api, tenant_id: str, user: str) -> str:
    with api.deps.db.transaction() as conn:
        accepted = chat_repo.accept_user_message(conn, tenant_id=tenant_id, user_id=user,
                                                 conversation_id=None, request_id=str(uuid.uuid4()),
                                                 text="hello")
    return accepted.conversation_id


def usage_row(api: Api, tenant_id: str, user: str, model: str, tokens: tuple[int, int], cost: str) -> None:
    with api.deps.db.transaction() as conn:
        conn.execute(
            "INSERT INTO usage_records (request_id, tenant_id, user_id, model_profile, region, input_tokens,"
            " output_tokens, duration_ms, finish_reason, cost_usd)"
            " VALUES (%s, %s, %s, %s, 'us-east-1', %s, %s, 10, 'stop', %s)",
            (uuid.uuid4(), tenant_id, user, model, tokens[0], tokens[1], Decimal(cost)),
        )


# ---- who gets what ----------------------------------------------------------------------------

def test_a_finance_user_reads_usage_but_no_conversations_or_documents(api: Api) -> None:
    t = tenant()
    conversation(api, t, "fiona")
    headers = api.bearer("fiona", t, "finance")
    assert api.client.get("/v1/usage", headers=headers).status_code == 200
    for path in ("/v1/conversations", "/v1/documents"):
        r = api.client.get(path, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN", (path, r.text)


def test_a_browser_user_reads_their_conversations_and_nothing_administrative(api: Api) -> None:
    t = tenant()
    mine = conversation(api, t, "alice")
    headers = api.bearer("alice", t, "chat")
    page = api.client.get("/v1/conversations", headers=headers).json()
    assert [c["id"] for c in page["items"]] == [mine]
    for method, path in (("GET", "/v1/usage"), ("GET", "/v1/api-keys"), ("POST", "/v1/api-keys"),
                         ("GET", "/v1/limits"), ("PUT", "/v1/limits")):
        r = api.client.request(method, path, headers=headers, json={"name": "x"} if method != "GET" else None)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["code"] == "FORBIDDEN"


def test_a_user_renames_a_conversation_and_bad_titles_or_other_owners_change_nothing(api: Api) -> None:
    t = tenant()
    conv = conversation(api, t, "alice")
    alice = api.bearer("alice", t, "chat")
    before = api.client.get(f"/v1/conversations/{conv}", headers=alice).json()
    r = api.client.patch(f"/v1/conversations/{conv}", headers=alice, json={"title": "  Trip\tplans 2026\n"})
    assert r.status_code == 200, r.text
    assert r.json()["title"] == "Trip plans 2026"
    listed = api.client.get("/v1/conversations", headers=alice).json()["items"]
    assert [(c["id"], c["title"]) for c in listed] == [(conv, "Trip plans 2026")]
    assert listed[0]["updatedAt"] == before["updatedAt"]  # a rename does not reorder the list
    for body in ({"title": ""}, {"title": " \t\n "}, {"title": "x" * 201}, {}, {"title": 3},
                 {"title": "ok", "extra": 1}, {"title": "Trip\x00plans"}):  # NUL: refused (issue 11)
        r = api.client.patch(f"/v1/conversations/{conv}", headers=alice, json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST", (body, r.text)
    for intruder in (api.bearer("bob", t, "chat"), api.bearer("alice", tenant(), "chat")):
        r = api.client.patch(f"/v1/conversations/{conv}", headers=intruder, json={"title": "mine now"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    assert api.client.get(f"/v1/conversations/{conv}", headers=alice).json()["title"] == "Trip plans 2026"


def test_an_admin_issues_a_service_key_that_chats_but_does_not_administer(api: Api) -> None:
    t = tenant()
    admin = api.bearer("root", t, "admin", "chat")
    r = api.client.post("/v1/api-keys", headers=admin, json={"name": "crm sync", "scopes": ["chat"]})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith(created["prefix"] + "_") and created["scopes"] == ["chat"]
    listed = api.client.get("/v1/api-keys", headers=admin).json()["items"]
    assert [k["prefix"] for k in listed] == [created["prefix"]] and "key" not in listed[0]
    service = {"x-api-key": key}
    assert api.client.get("/v1/conversations", headers=service).status_code == 200
    assert api.client.get("/v1/api-keys", headers=service).status_code == 403
    assert api.client.get("/v1/usage", headers=service).status_code == 403
    assert api.client.get("/v1/api-keys", headers=admin).json()["items"][0]["lastUsedAt"] is not None
    assert api.client.delete(f"/v1/api-keys/{created['id']}", headers=admin).status_code == 204
    r = api.client.get("/v1/conversations", headers=service)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_an_admin_cannot_mint_a_key_with_scopes_it_lacks(api: Api) -> None:
    admin = api.bearer("root", tenant(), "admin")
    r = api.client.post("/v1/api-keys", headers=admin, json={"name": "sneaky", "scopes": ["finance"]})
    assert r.status_code == 403 and api.client.get("/v1/api-keys", headers=admin).json()["items"] == []


def test_a_key_may_hold_every_scope_its_creator_has_and_types_are_not_coerced(api: Api) -> None:
    """Four scopes exist; the body's list was capped at three. "5" is not a number of days."""
    owner = api.bearer("root", tenant(), "admin", "chat", "finance", "documents:write")
    every = ["admin", "chat", "documents:write", "finance"]
    r = api.client.post("/v1/api-keys", headers=owner, json={"name": "all", "scopes": every})
    assert r.status_code == 201, r.text
    assert sorted(r.json()["scopes"]) == every
    r = api.client.post("/v1/api-keys", headers=owner, json={"name": "str", "expiresInDays": "5"})
    assert r.status_code == 400 and "expiresInDays" in r.json()["error"]["message"]


def test_a_finance_user_reads_usage_totals_by_day_user_and_model_as_json_and_csv(api: Api) -> None:
    t = tenant()
    usage_row(api, t, "alice", "llama-8b", (100, 50), "0.0015")
    usage_row(api, t, "alice", "llama-8b", (200, 100), "0.0030")
    usage_row(api, t, "=cmd|calc", "mistral-7b", (10, 5), "0.0001")
    usage_row(api, tenant(), "mallory", "llama-8b", (999, 999), "9.0")  # another tenant: never counted
    finance = api.bearer("fin", t, "finance")
    by_user = api.client.get("/v1/usage", params={"group_by": "user"}, headers=finance).json()
    assert {i["key"]: (i["requests"], i["inputTokens"], i["outputTokens"]) for i in by_user["items"]} == {
        "alice": (2, 300, 150), "=cmd|calc": (1, 10, 5)}
    assert by_user["totals"] == {"requests": 3, "inputTokens": 310, "outputTokens": 155, "costUsd": 0.0046}
    by_model = api.client.get("/v1/usage", params={"group_by": "model"}, headers=finance).json()
    assert [i["key"] for i in by_model["items"]] == ["llama-8b", "mistral-7b"]
    by_day = api.client.get("/v1/usage", params={"group_by": "day"}, headers=finance).json()
    assert len(by_day["items"]) == 1 and by_day["items"][0]["requests"] == 3
    by_tenant = api.client.get("/v1/usage", params={"group_by": "tenant"}, headers=finance).json()
    assert [i["key"] for i in by_tenant["items"]] == [t]
    r = api.client.get("/v1/usage", params={"group_by": "user", "format": "csv"}, headers=finance)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["group", "requests", "input_tokens", "output_tokens", "cost_usd"]
    assert ["'=cmd|calc", "1", "10", "5", "0.00010000"] in rows  # no formula injection into spreadsheets
    # A finance user reads usage, and neither keys nor limits.
    assert api.client.get("/v1/api-keys", headers=finance).status_code == 403
    assert api.client.get("/v1/limits", headers=finance).status_code == 403


def test_a_usage_parameter_the_route_does_not_take_is_refused_not_ignored(api: Api) -> None:
    """`tenant=B` was ignored: tenant A's finance user got A's report under a request for B's."""
    mine, other = tenant(), tenant()
    usage_row(api, mine, "alice", "m", (1, 1), "0.001")
    usage_row(api, other, "bob", "m", (9, 9), "0.009")
    finance = api.bearer("fin", mine, "finance")
    r = api.client.get("/v1/usage", params={"tenant": other}, headers=finance)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "tenant" and "always of the caller's own tenant" in error["message"]
    typo = api.client.get("/v1/usage", params={"groupby": "user"}, headers=finance)
    assert typo.status_code == 400 and typo.json()["error"]["param"] == "groupby"
    fine = api.client.get("/v1/usage", params={"group_by": "user", "limit": 5}, headers=finance)
    assert fine.status_code == 200


def test_usage_is_bounded_by_from_and_to(api: Api) -> None:
    t = tenant()
    usage_row(api, t, "alice", "m", (1, 1), "0.001")
    finance = api.bearer("fin", t, "finance")
    window = {"from": "2020-01-01", "to": "2020-02-01"}
    past = api.client.get("/v1/usage", params=window, headers=finance).json()
    assert past["items"] == [] and past["totals"]["requests"] == 0


@pytest.mark.parametrize("params", [
    {"group_by": "password"}, {"format": "xml"}, {"from": "yesterday"},
    {"from": "2024-02-01", "to": "2024-01-01"},
    {"from": "2020-01-01", "to": "2024-01-01"}, {"limit": "0"}, {"limit": "1000000"},
])
def test_bad_usage_queries_are_a_clear_400(api: Api, params: dict[str, str]) -> None:
    r = api.client.get("/v1/usage", params=params, headers=api.bearer("fin", tenant(), "finance"))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "BAD_REQUEST" and r.json()["error"]["message"]


def test_a_range_refused_because_of_a_default_names_the_default(api: Api) -> None:
    finance = api.bearer("fin", tenant(), "finance")
    r = api.client.get("/v1/usage", params={"to": "2020-01-01"}, headers=finance)
    message = r.json()["error"]["message"]
    assert r.status_code == 400 and "from, which defaults to the month's start" in message
    r = api.client.get("/v1/usage", params={"from": "2999-01-01"}, headers=finance)
    assert r.status_code == 400 and "to, which defaults to now" in r.json()["error"]["message"]


# ---- limits ------------------------------------------------------------------------------------

def test_an_admin_sets_the_tenants_limits_and_other_tenants_keep_the_defaults(api: Api) -> None:
    t, other = tenant(), tenant()
    admin = api.bearer("root", t, "admin")
    r = api.client.put("/v1/limits", headers=admin,
                       json={"messagesPerUserPerMinute": 5, "budgetUsdPerMonth": 25})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["limits"]["messagesPerUserPerMinute"] == 5 and body["limits"]["budgetUsdPerMonth"] == 25
    assert body["overrides"]["tokensPerUserPerDay"] is None
    assert body["limits"]["tokensPerUserPerDay"] == body["defaults"]["tokensPerUserPerDay"]
    assert api.client.get("/v1/limits", headers=admin).json()["limits"]["messagesPerUserPerMinute"] == 5
    theirs = api.client.get("/v1/limits", headers=api.bearer("root", other, "admin")).json()
    assert theirs["tenant"] == other and theirs["limits"]["messagesPerUserPerMinute"] == 60


@pytest.mark.parametrize("body", [
    {"messagesPerUserPerMinute": -1}, {"tokensPerUserPerDay": 10**13}, {"budgetUsdPerMonth": -0.01},
    {"budgetUsdPerMonth": 1e300}, {"messagesPerUserPerMinute": "lots"}, {"connectionsPerIp": 5},
    {"messagesPerUserPerMinute": 1.5}, [], "x",
])
def test_bad_limits_are_a_400_and_change_nothing(api: Api, body: Any) -> None:
    t = tenant()
    admin = api.bearer("root", t, "admin")
    api.client.put("/v1/limits", headers=admin, json={"messagesPerUserPerMinute": 7})
    r = api.client.put("/v1/limits", headers=admin, json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST", r.text
    assert api.client.get("/v1/limits", headers=admin).json()["overrides"]["messagesPerUserPerMinute"] == 7


# ---- tenancy -----------------------------------------------------------------------------------

def test_another_tenants_objects_are_404_never_403_and_survive(api: Api) -> None:
    victim, intruder = tenant(), tenant()
    conv = conversation(api, victim, "alice")
    key = api.client.post("/v1/api-keys", headers=api.bearer("root", victim, "admin", "chat"),
                          json={"name": "svc"}).json()
    thief = api.bearer("alice", intruder, *ALL_SCOPES)  # same user name, every scope, other tenant
    for method, path in (("GET", f"/v1/conversations/{conv}"), ("GET", f"/v1/conversations/{conv}/messages"),
                         ("DELETE", f"/v1/conversations/{conv}"), ("DELETE", f"/v1/api-keys/{key['id']}")):
        r = api.client.request(method, path, headers=thief)
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.json()["error"]["code"] == "NOT_FOUND"
    owner = api.bearer("alice", victim, "chat")
    assert api.client.get(f"/v1/conversations/{conv}", headers=owner).status_code == 200
    assert api.client.get("/v1/conversations", headers={"x-api-key": key["key"]}).status_code == 200


# ---- bad credentials ---------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Basic Zm9vOmJhcg=="}, {"Authorization": "Bearer "},
    {"Authorization": "Bearer x.y.z"},
    {"Authorization": "Bearer " + "a" * 9000}, {"Authorization": "Bearer " + "a" * 20_000},
    {"x-api-key": "csk_nope"}, {"x-api-key": "k" * 5000},
])
def test_absent_malformed_or_absurd_credentials_are_a_clear_4xx(api: Api, headers: dict[str, str]) -> None:
    r = api.client.get("/v1/conversations", headers=headers)
    assert r.status_code in (400, 401), r.text
    assert r.json()["error"]["code"] in ("BAD_REQUEST", "UNAUTHORIZED") and r.json()["error"]["message"]


def test_every_refusal_has_openais_error_shape_and_names_the_field_at_fault(api: Api) -> None:
    """The `openai` SDKs read `error.message`, `.type`, `.param` and `.code` (OpenAI's error object);
    every route's refusal has all four, whichever layer refused it (middleware, validation, a route,
    the router's 404)."""
    user = api.bearer("alice", tenant(), "chat", "admin")
    refusals = [
        api.client.get("/v1/conversations"),  # the middleware: no credentials
        api.client.get("/v1/no-such-path", headers=user),  # the router
        api.client.post("/v1/api-keys", headers=user, json={"name": "x", "expiresInDays": 0}),  # validation
        api.client.get(f"/v1/conversations/{uuid.uuid4()}", headers=user),  # a route's ChatError
    ]
    for r in refusals:
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, r.text
        assert error["type"] == error["code"].lower() and error["message"], r.text
    assert [r.status_code for r in refusals] == [401, 404, 400, 404]
    bad_json = api.client.post("/v1/api-keys", headers={**user, "Content-Type": "application/json"},
                               content=b'{"name": ')
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["message"] == "The body is not valid JSON."
    assert refusals[2].json()["error"]["param"] == "expiresInDays"


@pytest.mark.parametrize(("extra", "param"), [
    ({"max_tokens": "5"}, "max_tokens"), ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 5.0}, "max_tokens"),
    ({"temperature": "1"}, "temperature"), ({"stream": "yes"}, "stream"), ({"n": 2}, "n"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": [""]}, "stop"), ({"stop": 5}, "stop"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"logprobs": True}, "logprobs"),
    ({"max_tokens": 5, "max_completion_tokens": 9}, "max_tokens"), ({"frobnicate": 1}, "frobnicate"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages"),
])
def test_openai_fields_of_the_wrong_type_or_unsupported_are_a_400_naming_them_and_store_nothing(
    api: Api, extra: dict[str, Any], param: str
) -> None:
    """Not coerced (as on the WebSocket) and not silently ignored: tools that are never called, or a
    JSON format not applied, would be an answer the client did not ask for."""
    t = tenant()
    body = {"model": offered(api.deps.settings)[0].name, "messages": [{"role": "user", "content": "hi"}],
            **extra}
    r = api.client.post("/v1/chat/completions", headers=api.bearer("alice", t, "chat"), json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    with api.deps.db.transaction() as conn:
        assert conn.execute("SELECT count(*) AS n FROM conversations WHERE tenant_id = %s",
                            (t,)).fetchone() == {"n": 0}


def test_with_redis_down_a_request_is_a_503_with_retry_after_as_on_the_websocket(
    api: Api, pg_url: str, app: FastAPI
) -> None:
    """Nothing listens where this Deps looks for Redis: a dependency down, not a bug (the WebSocket
    answers INTERNAL with retryAfter; HTTP says 503 and Retry-After)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = api.deps.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    down = Deps(settings)
    set_deps(down)
    try:
        r = api.client.post("/v1/chat/completions", headers=api.bearer("alice", tenant(), "chat"),
                            json={"model": offered(settings)[0].name,
                                  "messages": [{"role": "user", "content": "hello"}]})
    finally:
        set_deps(api.deps)
        down.db.close()
    assert r.status_code == 503 and r.headers["Retry-After"] == str(int(settings.dependency_retry_after_s))
    assert r.json()["error"]["code"] == "INTERNAL" and "retry" in r.json()["error"]["message"]


def test_an_expired_token_is_refused(api: Api) -> None:
    token = api.identity.mint(user="alice", tenant=tenant(), ttl_s=-120)
    r = api.client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_api_key_bodies_out_of_bounds_are_400_and_create_nothing(api: Api) -> None:
    admin = api.bearer("root", tenant(), *ALL_SCOPES)
    for body in ({"name": ""}, {"name": "x" * 101}, {"name": "x", "scopes": ["root"]},
                 {"name": "x", "scopes": []}, {"name": "x", "expiresInDays": 0},
                 {"name": "x", "expiresInDays": 10**9}, {"name": "x", "extra": 1}):
        r = api.client.post("/v1/api-keys", headers=admin, json=body)
        assert r.status_code == 400, (body, r.text)
    assert api.client.get("/v1/api-keys", headers=admin).json()["items"] == []


# ---- schemathesis ------------------------------------------------------------------------------

# Loaded from the app itself (no server): the very document /openapi.json publishes. The calls reach the
# dependencies the `api` fixture installs. /healthz is deep (503 without a model server, by design);
# documents ingestion is exercised by the RAG tests and loads the embedding model.
schema = (schemathesis.openapi.from_asgi("/openapi.json", create_app())
          .exclude(path="/healthz").exclude(path_regex="^/v1/documents"))


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_the_published_openapi_holds_no_5xx_and_no_off_schema_response(case: Any, api: Api) -> None:
    t = f"fuzz-{uuid.uuid4().hex[:8]}"
    case.call_and_validate(headers=api.bearer("fuzzer", t, *ALL_SCOPES),
                           checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
