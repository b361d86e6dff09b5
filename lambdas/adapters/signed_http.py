"""One AWS endpoint that the hot path POSTs to itself: its own SigV4 signature over kept connections.

boto3's client spends most of a call's CPU in generic machinery (event hooks, parameter validation,
endpoint resolution, response parsing) that a fixed request does not need. Measured alone on this
project's machine: 1.2-2.3 ms per `post_to_connection` against 0.55 ms, and 1.43-1.59 ms per
`send_message` against 0.62-0.74 ms, for the same signed request made here (docs/benchmarks.md,
"Hot path"). The adapters that use
this (`@connections` posts, the job queue's SendMessage) build exactly the request boto3 sends, and
their tests compare the two byte for byte under the same clock and credentials. Credentials come from
the SDK's own chain, so a Lambda role's session token and its refresh work as with boto3. The
exchange itself goes over kept connections (lambdas/adapters/http1.py): through urllib3
it cost several times the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from urllib.parse import urlsplit

from botocore.credentials import Credentials
from botocore.httpsession import get_cert_path
from botocore.session import get_session

from lambdas.adapters.http1 import Origin, Response
from lambdas.adapters.sigv4 import sign_post


class SignedEndpoint:
    """`endpoint_url` (scheme, host, optional port and base path), signed for `service` in `region`."""

    def __init__(
        self,
        endpoint_url: str,
        *,
        region: str,
        service: str,
        what: str,
        credentials: Credentials | None = None,
        connect_timeout_s: float = 2,
        read_timeout_s: float = 5,
    ) -> None:
        self.url = endpoint_url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"The {what} endpoint must be an http(s) URL, not {endpoint_url!r}.")
        self.region = region
        self.service = service
        self.base_path = parts.path  # "/{stage}" for @connections in the cloud
        self._credentials = credentials or get_session().get_credentials()
        if self._credentials is None:
            raise ValueError(f"No AWS credentials to sign {what} requests with.")
        self._origin = Origin(
            self.url, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            ca_certs=get_cert_path(True),  # the CA bundle boto3 uses
        )
        self.host = self._origin.host  # what the Host header says and the signature covers

    def sign(
        self, path: str, body: bytes, headers: Mapping[str, str] | None = None, now: datetime | None = None
    ) -> dict[str, str]:
        """`headers` plus the signature's headers for a POST of `body` to `path`."""
        credentials = self._credentials.get_frozen_credentials()
        return sign_post(
            host=self.host, path=path, body=body, access_key=credentials.access_key,
            secret_key=credentials.secret_key, token=credentials.token, region=self.region,
            service=self.service, headers=headers, now=now,
        )

    def send(self, path: str, body: bytes, signed: Mapping[str, str]) -> Response:
        """One POST already signed (`sign`; sign again for another attempt: a signature dates), no
        retries (the caller decides); raises http1.NoAnswer when no answer came."""
        return self._origin.request("POST", path, body, signed)
