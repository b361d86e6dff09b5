"""API Gateway `@connections`: push frames to WebSocket clients with boto3's apigatewaymanagementapi.

In the cloud the endpoint is https://{api-id}.execute-api.{region}.amazonaws.com/{stage}; locally it is
the gateway emulator, reached by the very same client through `endpoint_url`.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


class Connections:
    def __init__(self, endpoint_url: str, *, region: str, client: Any | None = None) -> None:
        if not endpoint_url:
            raise ValueError("No @connections endpoint: set CHATSTACK_CONNECTIONS_URL.")
        self.client = client or boto3.client(
            "apigatewaymanagementapi",
            endpoint_url=endpoint_url,
            region_name=region,
            # Posts are small and idempotent from the client's view (it dedups by seq): retry a little,
            # never for long, so one slow connection cannot stall a stream.
            config=Config(
                retries={"total_max_attempts": 2, "mode": "standard"},
                connect_timeout=2,
                read_timeout=5,
                max_pool_connections=64,
                tcp_keepalive=True,
            ),
        )

    def post(self, connection_id: str, data: str) -> bool:
        """Send one frame; False when the connection is gone (410), so the caller can forget it."""
        try:
            self.client.post_to_connection(ConnectionId=connection_id, Data=data.encode())
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("GoneException", "410"):
                return False
            raise

    def disconnect(self, connection_id: str) -> None:
        try:
            self.client.delete_connection(ConnectionId=connection_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("GoneException", "410"):
                raise
