"""API keys on real PostgreSQL: shown once, stored as a hash, scoped to a tenant, expiring, revocable;
the $connect authorizer (handler invoked with API Gateway's documented REQUEST-authorizer event,
tests/fixtures/events) admits a good key, refuses a bad one and rate-limits new connections per IP."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatstack.commands.keys import keys
from chatstack.local.lambda_context import LocalLambdaContext
from lambdas import wiring
from lambdas.adapters.auth import Identity
from lambdas.config import Settings
from lambdas.errors import BadRequest, Forbidden, NotFound, Unauthorized
from lambdas.handlers import authorizer
from lambdas.runtime import Deps, set_deps
from lambdas.services.api_keys import ApiKeyService, hash_key

EVENT = json.loads((Path(__file__).parents[1] / "fixtures/events/apigw_websocket_authorizer_request.json")
                   .read_text())


@pytest.fixture
def deps(pg_url: str, redis_url: str) -> Iterator[Deps]:
    d = Deps(Settings(environment="test", database_url=pg_url, redis_url=redis_url,
                      auth_issuer="https://issuer.invalid", limit_connections_per_ip_per_minute=3))
    set_deps(d)
    yield d
    set_deps(None)
    d.db.close()


def admin(tenant: str | None = None) -> Identity:
    return Identity(tenant_id=tenant or f"t-{uuid.uuid4().hex[:10]}", user_id="root",
                    scopes=frozenset({"admin", "chat"}))


def test_a_key_is_shown_once_stored_as_a_hash_and_authenticates_as_its_tenant(deps: Deps) -> None:
    creator = admin()
    created = ApiKeyService(deps).create(creator, name="billing sync", scopes=["chat"], expires_in_days=30)
    assert created.key.startswith("csk_") and len(created.key) == 60
    with deps.db.transaction() as conn:
        stored = conn.execute("SELECT * FROM api_keys WHERE id = %s", (created.row.id,)).fetchone()
    assert stored is not None and stored["hash"] == hash_key(created.key)
    assert created.key not in json.dumps(stored, default=str)  # the secret is nowhere at rest
    identity = ApiKeyService(deps).authenticate(created.key)
    assert identity.tenant_id == creator.tenant_id and identity.scopes == {"chat"}
    assert identity.method == "api_key" and identity.key_id == created.row.id
    assert identity.user_id == f"key:{created.row.prefix}"
    [listed] = ApiKeyService(deps).list(creator.tenant_id)
    assert listed.last_used_at is not None


@pytest.mark.parametrize("presented", [
    "", "csk_", "not-a-key", "csk_" + "a" * 12 + "_" + "b" * 42, "CSK_" + "a" * 12 + "_" + "b" * 43,
    "csk_" + "a" * 12 + "_" + "b" * 43 + "\x00", "x" * 100_000,
])
def test_malformed_keys_are_refused_cleanly(deps: Deps, presented: str) -> None:
    with pytest.raises(Unauthorized, match="malformed"):
        ApiKeyService(deps).authenticate(presented)


def test_a_key_with_a_wrong_secret_a_revoked_key_and_an_expired_key_are_refused(deps: Deps) -> None:
    service, creator = ApiKeyService(deps), admin()
    created = service.create(creator, name="svc", scopes=["chat"], expires_in_days=None)
    wrong = created.key[:-1] + ("A" if created.key[-1] != "A" else "B")
    with pytest.raises(Unauthorized, match="not valid"):
        service.authenticate(wrong)
    unknown = "csk_" + "a" * 12 + created.key[16:]
    with pytest.raises(Unauthorized, match="not valid"):
        service.authenticate(unknown)
    service.revoke(creator.tenant_id, created.row.id)
    with pytest.raises(Unauthorized, match="revoked"):
        service.authenticate(created.key)
    expiring = service.create(creator, name="old", scopes=["chat"], expires_in_days=1)
    with deps.db.transaction() as conn:
        conn.execute("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = %s",
                     (expiring.row.id,))
    with pytest.raises(Unauthorized, match="expired"):
        service.authenticate(expiring.key)


def test_a_key_cannot_hold_more_than_its_creator(deps: Deps) -> None:
    with pytest.raises(Forbidden, match="finance"):
        ApiKeyService(deps).create(admin(), name="x", scopes=["finance"], expires_in_days=None)
    with pytest.raises(BadRequest):
        ApiKeyService(deps).create(admin(), name="x", scopes=["root"], expires_in_days=None)
    with pytest.raises(BadRequest):
        ApiKeyService(deps).create(admin(), name="\x1b[31m", scopes=["chat"], expires_in_days=None)


def test_another_tenants_key_cannot_be_revoked_and_stays_usable(deps: Deps) -> None:
    created = ApiKeyService(deps).create(admin(), name="svc", scopes=["chat"], expires_in_days=None)
    with pytest.raises(NotFound):
        ApiKeyService(deps).revoke(admin().tenant_id, created.row.id)
    assert ApiKeyService(deps).authenticate(created.key).key_id == created.row.id


def _context() -> LocalLambdaContext:
    return LocalLambdaContext(wiring.AUTHORIZER)


def _event(ip: str, *, api_key: str | None = None, token: str | None = None) -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    event["requestContext"]["identity"]["sourceIp"] = ip
    event["headers"].pop("x-api-key")
    event["queryStringParameters"] = {"token": token} if token else {}
    if api_key:
        event["headers"]["x-api-key"] = api_key
    return event


def test_the_authorizer_admits_a_service_key_with_its_identity_context(deps: Deps) -> None:
    creator = admin()
    created = ApiKeyService(deps).create(creator, name="svc", scopes=["chat"], expires_in_days=None)
    reply = authorizer.handler(_event(f"203.0.113.{uuid.uuid4().int % 250}", api_key=created.key), _context())
    assert reply["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert reply["context"]["tenantId"] == creator.tenant_id
    assert reply["context"]["method"] == "api_key" and reply["context"]["scopes"] == "chat"


def test_the_authorizer_refuses_bad_keys_and_absurd_tokens_as_unauthorized(deps: Deps) -> None:
    ips = [f"ip-{uuid.uuid4()}" for _ in range(3)]
    for event in (_event(ips[0], api_key="csk_bogus"), _event(ips[1], token="x" * 50_000), _event(ips[2])):
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            authorizer.handler(event, _context())


def test_the_authorizer_denies_connections_beyond_the_per_ip_limit_before_checking_keys(deps: Deps) -> None:
    ip = f"ip-{uuid.uuid4()}"
    for _ in range(3):
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            authorizer.handler(_event(ip, api_key="csk_guess"), _context())
    reply = authorizer.handler(_event(ip, api_key="csk_guess"), _context())
    assert reply["policyDocument"]["Statement"][0]["Effect"] == "Deny"
    assert reply["context"]["code"] == "RATE_LIMITED" and reply["context"]["retryAfter"] >= 1


def test_the_keys_command_creates_lists_and_revokes(deps: Deps, pg_url: str) -> None:
    runner, tenant = CliRunner(), f"t-{uuid.uuid4().hex[:10]}"
    env = {"DATABASE_URL": pg_url}
    made = runner.invoke(keys, ["create", "--tenant", tenant, "--name", "ci", "--scope", "chat",
                                "--scope", "finance"], env=env)
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    identity = ApiKeyService(deps).authenticate(key)
    assert identity.tenant_id == tenant and identity.scopes == {"chat", "finance"}
    listed = runner.invoke(keys, ["list", "--tenant", tenant], env=env)
    assert listed.exit_code == 0 and key[:16] in listed.stdout and key not in listed.stdout
    revoked = runner.invoke(keys, ["revoke", identity.key_id, "--tenant", tenant], env=env)
    assert revoked.exit_code == 0, revoked.output
    with pytest.raises(Unauthorized, match="revoked"):
        ApiKeyService(deps).authenticate(key)
    bad = runner.invoke(keys, ["revoke", "not-a-uuid", "--tenant", tenant], env=env)
    assert bad.exit_code == 2 and "KEY_ID" in bad.output
    missing = runner.invoke(keys, ["revoke", str(uuid.uuid4()), "--tenant", tenant], env=env)
    assert missing.exit_code == 1 and "No such API key" in missing.output


@pytest.mark.parametrize("bad", ["ACME", "t t", " padded", ""])
def test_the_keys_command_refuses_a_tenant_id_the_service_refuses(bad: str, pg_url: str) -> None:
    """A key for "ACME" worked on REST while a JWT for "ACME" got 401 (docs/identity.md: tenant ids are
    never folded); now the command says the rule and writes nothing."""
    made = CliRunner().invoke(keys, ["create", "--tenant", bad, "--name", "x"], env={"DATABASE_URL": pg_url})
    assert made.exit_code == 2 and "lower-case" in made.output and "Traceback" not in made.output


def test_the_keys_command_grants_documents_write(deps: Deps, pg_url: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    args = ["create", "--tenant", tenant, "--name", "docs", "--scope", "documents:write"]
    made = CliRunner().invoke(keys, args, env={"DATABASE_URL": pg_url})
    assert made.exit_code == 0, made.output
    assert ApiKeyService(deps).authenticate(made.stdout.strip()).scopes == {"documents:write"}

