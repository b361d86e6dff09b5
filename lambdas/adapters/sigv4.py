"""AWS Signature Version 4 for the hot path: signing `@connections` posts, and checking the signatures
the local stand-ins receive (chatstack/local/internal_auth.py).

botocore's SigV4Auth builds an AWSRequest, parses its URL again and derives the signing key (four
HMACs) on every call: about 0.3 ms, a fifth of a whole post. The steps are few and fixed ("Create a
canonical request", "Create a string to sign", "Calculate the signature", AWS IAM User Guide, Signature
Version 4); this module takes them once per request with the derived key cached per day, and uses
botocore's own path normalization so non-S3 paths are encoded exactly as boto3 encodes them.
tests/functional/test_connections_adapter.py checks that a signed post is byte-for-byte the request
boto3 builds; tests/security/test_internal_auth.py checks that what botocore signs verifies here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from botocore.utils import normalize_url_path

ALGORITHM = "AWS4-HMAC-SHA256"
TIMESTAMP = "%Y%m%dT%H%M%SZ"


@functools.lru_cache(maxsize=64)
def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """The derived key: it changes once a day, so it is computed once a day."""
    key = ("AWS4" + secret_access_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, Sequence[str]],
    signed: Sequence[str],
    payload_hash: str,
) -> str:
    """`path` as sent (already percent-encoded, as boto3 sends it); `headers` by lower-case name;
    `signed` the sorted names that are signed; `query` already canonical (sorted, encoded)."""
    lines = [
        method.upper(),
        quote(normalize_url_path(path), safe="/~"),  # non-S3 services: normalized, encoded again
        query,
        # Lowercase(name) ":" Trimall(value), repeated headers joined with commas
        *(f"{n}:{','.join(' '.join(v.split()) for v in headers[n])}" for n in signed),
        "",
        ";".join(signed),
        payload_hash,
    ]
    return "\n".join(lines)


def signature(
    secret_access_key: str, stamp: str, region: str, service: str, canonical: str
) -> str:
    date = stamp[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = f"{ALGORITHM}\n{stamp}\n{scope}\n{digest}"
    key = signing_key(secret_access_key, date, region, service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def sign_post(
    *,
    host: str,
    path: str,
    body: bytes,
    access_key: str,
    secret_key: str,
    token: str | None,
    region: str,
    service: str,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers that sign a POST of `body` to `host` + `path` (Host itself is sent by the HTTP
    client, and is signed): `headers` (signed too, as boto3 signs Content-Type and X-Amz-Target),
    X-Amz-Date, X-Amz-Security-Token when there is a session token, and Authorization."""
    stamp = (now or datetime.now(UTC)).strftime(TIMESTAMP)
    out = dict(headers or {})
    out["X-Amz-Date"] = stamp
    if token:
        out["X-Amz-Security-Token"] = token
    canonical_headers = {name.lower(): [value] for name, value in out.items()}
    canonical_headers["host"] = [host]
    signed = sorted(canonical_headers)
    canonical = canonical_request(
        "POST", path, "", canonical_headers, signed, hashlib.sha256(body).hexdigest()
    )
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    out["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, "
        f"Signature={signature(secret_key, stamp, region, service, canonical)}"
    )
    return out
