"""The REQUEST authorizer on $connect. It returns a small identity context (tenant, user, scopes),
never a policy per use case: permissions are checked in code, so the policy cannot grow until every
request fails. Browsers pass `?token=JWT`; services send `x-api-key`."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.adapters.auth import Identity
from lambdas.errors import RateLimited, Unauthorized
from lambdas.observability import logger, metrics
from lambdas.runtime import deps
from lambdas.services.limits import LimitService


def _header(event: dict[str, Any], name: str) -> str:
    for key, value in (event.get("headers") or {}).items():
        if key.lower() == name:
            return str(value or "")
    return ""


def authenticate(event: dict[str, Any]) -> Identity:
    d = deps()
    # Before any credential is looked at: guessing keys or tokens costs the guesser its connection budget.
    source_ip = str(((event.get("requestContext") or {}).get("identity") or {}).get("sourceIp") or "")
    LimitService(d).admit_connection(source_ip)
    query = event.get("queryStringParameters") or {}
    api_key = _header(event, "x-api-key")
    if api_key:
        from lambdas.services.api_keys import ApiKeyService

        return ApiKeyService(d).authenticate(api_key)
    token = str(query.get("token") or "")
    auth = _header(event, "authorization")
    if not token and auth.lower().startswith("bearer "):
        token = auth[7:].strip()
    if not token:
        raise Unauthorized("Connect with ?token=JWT or an x-api-key header.")
    return d.verifier.verify(token)


def policy(identity: Identity, method_arn: str) -> dict[str, Any]:
    return {
        "principalId": f"{identity.tenant_id}/{identity.user_id}",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": method_arn}],
        },
        "context": identity.to_context(),
    }


def deny(method_arn: str, exc: RateLimited) -> dict[str, Any]:
    return {
        "principalId": "rate-limited",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": method_arn}],
        },
        "context": {"code": exc.code, "retryAfter": int(exc.retry_after or 1)},
    }


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        identity = authenticate(event)
    except RateLimited as exc:
        metrics.add_metric(name="ConnectRateLimited", unit="Count", value=1)
        logger.info("connection refused", extra={"reason": exc.message, "retry_after": exc.retry_after})
        # An authorizer can only allow, deny (403) or fail as "Unauthorized" (401); a deny says "not now"
        # without telling a guesser whether the credential was good.
        return deny(str(event.get("methodArn", "")), exc)
    except Unauthorized as exc:
        metrics.add_metric(name="AuthRejected", unit="Count", value=1)
        logger.info("connection refused", extra={"reason": exc.message})
        # API Gateway answers 401 exactly when an authorizer raises "Unauthorized".
        raise Exception("Unauthorized") from None
    return policy(identity, str(event.get("methodArn", "")))
