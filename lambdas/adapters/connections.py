"""API Gateway `@connections`: push frames to WebSocket clients.

In the cloud the endpoint is https://{api-id}.execute-api.{region}.amazonaws.com/{stage}; locally it is
the gateway emulator, reached the same way through `endpoint_url`.

Posting is the hot path: one call per delta, per watcher, for every stream. boto3's client spent
about 1.6 ms of CPU per `post_to_connection` here, against about 0.55 ms for the same signed request
made by botocore's own SigV4 signer over one urllib3 connection pool (docs/benchmarks.md, "Hot
path"): most of boto3's cost is its generic machinery (event hooks, parameter validation, endpoint
resolution, response parsing), which a fixed `POST /{stage}/@connections/{id}` does not need. So
`post` builds that request itself, signs it and sends it over a kept connection
(lambdas/adapters/signed_http.py, lambdas/adapters/http1.py: 84-104 us of CPU per exchange where
urllib3 took 329-704 us) with the SDK's credentials chain, so the Lambda role's session token and
its refresh work as with boto3; tests/functional/test_connections_adapter.py checks that the request
is byte-for-byte the one boto3 signs. `disconnect` is rare and stays on boto3.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.utils import percent_encode

from lambdas.adapters.http1 import NoAnswer
from lambdas.adapters.signed_http import SignedEndpoint

SERVICE = "execute-api"  # the signing name of apigatewaymanagementapi
# Posts are small and idempotent from the client's view (it dedups by seq): retry once, never for
# long, so one slow connection cannot stall a stream (boto3's "standard" mode with 2 attempts did the
# same: connection errors, throttling and 5xx).
ATTEMPTS = 2
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_PAUSE_S = 0.05


class PostFailed(Exception):
    """`@connections` refused a post for a reason other than a gone connection."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(f"{status} {error_type}: {message}")
        self.status = status
        self.error_type = error_type


class Connections:
    def __init__(
        self,
        endpoint_url: str,
        *,
        region: str,
        client: Any | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        if not endpoint_url:
            raise ValueError("No @connections endpoint: set CHATSTACK_CONNECTIONS_URL.")
        self._endpoint = SignedEndpoint(
            endpoint_url, region=region, service=SERVICE, what="@connections", credentials=credentials
        )
        self.endpoint_url = self._endpoint.url
        self.region = region
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 client (for the rare calls: `disconnect`), made on first use."""
        if self._client is None:
            self._client = boto3.client(
                "apigatewaymanagementapi",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(
                    retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
                    connect_timeout=2,
                    read_timeout=5,
                    tcp_keepalive=True,
                ),
            )
        return self._client

    def path(self, connection_id: str) -> str:
        return f"{self._endpoint.base_path}/@connections/{percent_encode(connection_id)}"

    def signed(
        self, connection_id: str, body: bytes, now: datetime | None = None
    ) -> tuple[str, dict[str, str]]:
        """The path and headers of a signed `PostToConnection` request (as boto3 would send it)."""
        path = self.path(connection_id)
        return path, self._endpoint.sign(path, body, now=now)

    def post(self, connection_id: str, data: str) -> bool:
        """Send one frame; False when the connection is gone (410), so the caller can forget it."""
        body = data.encode()
        path = self.path(connection_id)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._endpoint.send(path, body, self._endpoint.sign(path, body))
            except NoAnswer:
                if attempt == ATTEMPTS:
                    raise
                time.sleep(RETRY_PAUSE_S)
                continue
            if response.status < 300:
                return True
            if response.status == 410:
                return False
            if response.status in RETRY_STATUS and attempt < ATTEMPTS:
                time.sleep(RETRY_PAUSE_S)
                continue
            error_type = response.headers.get("x-amzn-errortype", "").split(":")[0]
            message = response.data[:500].decode("utf-8", "replace")
            raise PostFailed(response.status, error_type or "Unknown", message)
        raise AssertionError("unreachable")

    def disconnect(self, connection_id: str) -> None:
        try:
            self.client.delete_connection(ConnectionId=connection_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("GoneException", "410"):
                raise
