"""Who may call the local stand-ins of services that AWS keeps behind IAM.

In the cloud only principals with IAM permissions reach SQS, `@connections` (execute-api:ManageConnections),
Lambda Invoke and the SageMaker endpoint. Locally these are HTTP routes on 127.0.0.1, so `chatstack up`
makes credentials for each run and every stand-in checks them:

- boto3-reached stand-ins (SQS's JSON protocol, `@connections`) verify the request's Signature
  Version 4 against the run's access key, as AWS does: botocore recomputes the signature over the
  headers the client signed, and the time must be within AWS's 5 minutes;
- the Lambda Invoke host and the model server, reached by our own HTTP clients, require the run's
  secret in one header.

Both are ASGI middleware, so the same guard wraps any route and can be tested on its own. A refusal
is answered in the shape the caller's client understands (AWS's JSON error with `x-amzn-ErrorType`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from calendar import timegm
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lambdas.adapters import sigv4
from lambdas.config import INTERNAL_SECRET_HEADER

logger = logging.getLogger("chatstack.security")

SECRET_HEADER = INTERNAL_SECRET_HEADER
ENV_SECRET = "CHATSTACK_INTERNAL_SECRET"  # Settings.internal_secret
MAX_SKEW_S = 300  # AWS refuses a signature more than 5 minutes from its clock (RequestTimeTooSkewed)
MAX_SIGNED_BODY = 1024 * 1024  # the stand-ins take at most 256 KB (SQS) and 128 KB (@connections)


@dataclass(frozen=True, slots=True)
class RunCredentials:
    """The credentials of one `chatstack up`: an access key pair for boto3 and a secret for our clients."""

    access_key_id: str
    secret_access_key: str
    secret: str

    @classmethod
    def generate(cls) -> RunCredentials:
        return cls(
            access_key_id="ASIALOCAL" + secrets.token_hex(6).upper(),
            secret_access_key=secrets.token_urlsafe(30),
            secret=secrets.token_urlsafe(32),
        )

    def environment(self) -> dict[str, str]:
        """What child processes (Lambda hosts, the model server) get to sign and to prove themselves."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            ENV_SECRET: self.secret,
        }


class Refusal(Exception):
    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


_STAMP = re.compile(r"(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z")


def _signed_at(stamp: str) -> int:
    match = _STAMP.fullmatch(stamp)
    if match is None:
        raise Refusal(403, "IncompleteSignatureException", "The request has no valid X-Amz-Date.")
    try:
        return timegm(time.struct_time((*map(int, match.groups()), 0, 0, 0)))
    except (ValueError, OverflowError):
        raise Refusal(403, "IncompleteSignatureException", "The request has no valid X-Amz-Date.") from None


def verify_sigv4(
    *, method: str, raw_path: str, query: str, headers: list[tuple[str, str]], body: bytes,
    access_key_id: str, secret_access_key: str, now: float | None = None,
) -> None:
    """Raise Refusal unless the request carries a valid SigV4 signature by `access_key_id`.

    The canonical request is the one botocore's SigV4Auth builds for a non-S3 service (the same code
    signs our @connections posts: lambdas/adapters/sigv4.py); tests/security/test_internal_auth.py
    checks it against signatures botocore makes. It runs on every @connections post.
    """
    auth = next((v for k, v in headers if k.lower() == "authorization"), "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        raise Refusal(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    try:
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
        key_id, date, region, service, terminal = parts["Credential"].split("/")
        signed = parts["SignedHeaders"].split(";")
        given = parts["Signature"]
    except (KeyError, ValueError):
        raise Refusal(403, "IncompleteSignatureException", "The authorization header is malformed.") from None
    if terminal != "aws4_request" or not hmac.compare_digest(key_id, access_key_id):
        raise Refusal(
            403, "UnrecognizedClientException", "The security token included in the request is invalid."
        )
    stamp = next((v for k, v in headers if k.lower() == "x-amz-date"), "")
    signed_at = _signed_at(stamp)
    if abs((time.time() if now is None else now) - signed_at) > MAX_SKEW_S or not stamp.startswith(date):
        raise Refusal(403, "InvalidSignatureException", "Signature expired or not yet valid.")
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(value)
    if any(name not in values for name in signed) or "host" not in signed or signed != sorted(set(signed)):
        raise Refusal(
            403, "InvalidSignatureException", "SignedHeaders must list present headers, sorted, with host."
        )
    payload_hash = hashlib.sha256(body).hexdigest()
    if "x-amz-content-sha256" in values and values["x-amz-content-sha256"] != [payload_hash]:
        # AWS checks the declared hash against the body; trusting it would let a captured signature
        # carry another body.
        raise Refusal(400, "InvalidSignatureException", "The x-amz-content-sha256 does not match the body.")
    canonical = sigv4.canonical_request(
        method, raw_path, _canonical_query(query), values, signed, payload_hash
    )
    expected = sigv4.signature(secret_access_key, stamp, region, service, canonical)
    if not hmac.compare_digest(expected, given):
        raise Refusal(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
        )


def _canonical_query(query: str) -> str:
    """botocore's canonical query string (the internal routes take none; kept exact all the same)."""
    if not query:
        return ""
    signer = SigV4Auth(Credentials("-", "-"), "-", "-")
    return str(signer.canonical_query_string(AWSRequest(method="POST", url=f"http://h/?{query}")))


async def body_of(
    receive: Receive, *, limit: int | None = None, messages: list[Message] | None = None
) -> bytes | None:
    """A request's whole body; None when the client went away first. A body over `limit` is refused
    (413); `messages` collects every message read, for a guard to replay them to the app behind it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if messages is not None:
            messages.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        if limit is not None:
            size += len(chunk)
            if size > limit:
                raise Refusal(413, "PayloadTooLargeException", "Request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _refuse(send: Send, refusal: Refusal, scope: Scope) -> None:
    client = scope.get("client") or ("?", 0)
    logger.warning(
        "internal endpoint refused: %s %s from %s (%s)", scope.get("method"), scope.get("path"), client[0],
        refusal.error_type,
    )
    body = json.dumps({"__type": refusal.error_type, "message": refusal.message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-errortype", refusal.error_type.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SigV4Guard:
    """Admit only HTTP requests signed (SigV4) with the run's access key; the body is read to check its
    hash and then replayed to the app."""

    def __init__(self, app: ASGIApp, *, access_key_id: str, secret_access_key: str) -> None:
        self.app = app
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        try:
            body = await body_of(receive, limit=MAX_SIGNED_BODY, messages=messages)
            if body is None:
                return  # the caller went away
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            verify_sigv4(
                method=scope["method"],
                raw_path=(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=headers,
                body=body,
                access_key_id=self.access_key_id,
                secret_access_key=self.secret_access_key,
            )
        except Refusal as refusal:
            await _refuse(send, refusal, scope)
            return
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)


class SecretGuard:
    """Admit only requests carrying the run's secret in `SECRET_HEADER` (compared in constant time)."""

    def __init__(self, app: ASGIApp, *, secret: str, open_paths: frozenset[str] = frozenset()) -> None:
        if not secret:
            raise ValueError("an internal endpoint needs a secret")
        self.app = app
        self.secret = secret.encode()
        self.open_paths = open_paths  # e.g. a health check that reveals nothing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("path") not in self.open_paths:
            given = (_header(scope, SECRET_HEADER.encode()) or "").encode("latin-1")
            if not hmac.compare_digest(given, self.secret):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                refusal = Refusal(403, "AccessDeniedException", "Missing or wrong internal secret.")
                await _refuse(send, refusal, scope)
                return
        await self.app(scope, receive, send)


def secret_headers(secret: str | None) -> dict[str, str]:
    """The header our internal clients send (nothing when the run has no secret, e.g. in the cloud)."""
    return {SECRET_HEADER: secret} if secret else {}


def guarded(app: Any, credentials: RunCredentials) -> SigV4Guard:
    return SigV4Guard(
        app, access_key_id=credentials.access_key_id, secret_access_key=credentials.secret_access_key
    )


class ByListener:
    """One server, two listeners: requests that arrived on `internal_port` (loopback only) go to the
    internal app, all others to the public one, so no public request can ever reach an internal route."""

    def __init__(self, public: ASGIApp, internal: ASGIApp, internal_port: int) -> None:
        self.public = public
        self.internal = internal
        self.internal_port = internal_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        on_internal = server is not None and server[1] == self.internal_port
        await (self.internal if on_internal else self.public)(scope, receive, send)


def write_private_json(path: Path, value: dict[str, Any]) -> None:
    """A file only its owner can read (like the signing key): the run's internal credentials."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(value, out)
    tmp.replace(path)
