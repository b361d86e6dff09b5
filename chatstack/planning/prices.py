"""Dated unit prices for everything the deployment config can create, except the SageMaker instances
(their prices live in the profile catalogs, sagemaker_containers.profiles).

All prices are us-east-1 on-demand list prices. No official price file was reachable where this table
was written, so each carries its source, the date of that source and a confidence mark, as the
instance catalog does:

- ``S``: a secondary source (a third-party article quoting the AWS price page), named and dated.
- ``U``: unverified, a recollection of the AWS pricing page; check it before relying on it.
- ``set``: the profile's own ``price_per_hour_override_usd`` (your number, shown as such).

No price here is ``V``. A class or node type missing from a table has no price: the planner shows it
as unknown and leaves it out of the totals rather than counting it as zero. The authoritative path is
the AWS Price List API (``pricing`` client) or the CUR column ``pricing_public_on_demand_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Confidence = Literal["V", "S", "U", "set"]


@dataclass(frozen=True, slots=True)
class Price:
    """One unit price: ``usd`` per ``unit``, where it came from and how sure it is."""

    usd: float
    unit: str
    source: str
    date: str
    confidence: Confidence

    @property
    def mark(self) -> str:
        return f"[{self.confidence}]"


_RECALLED = "AWS pricing page as recalled (us-east-1); verify"
_AWSFORENGINEERS = "awsforengineers.com 'AWS API Gateway Pricing Explained' (us-east-1)"
_REPOST_AOSS = "repost.aws answer on OpenSearch Serverless costs; awsnegotiations.com (Feb 2026)"


def _u(usd: float, unit: str) -> Price:
    return Price(usd, unit, _RECALLED, "undated", "U")


# Aurora PostgreSQL (Aurora Standard storage configuration), per instance-hour.
AURORA_INSTANCE_HOUR: dict[str, Price] = {
    "db.r6g.large": _u(0.260, "instance-hour"),
    "db.r6g.xlarge": _u(0.519, "instance-hour"),
    "db.r7g.large": _u(0.276, "instance-hour"),
    "db.r7g.xlarge": _u(0.552, "instance-hour"),
    "db.r7g.2xlarge": _u(1.104, "instance-hour"),
}
# RDS Proxy bills per vCPU-hour of the instances behind it.
RDS_PROXY_VCPU_HOUR = _u(0.015, "vCPU-hour")

# ElastiCache for Valkey, node-based, per node-hour.
CACHE_NODE_HOUR: dict[str, Price] = {
    "cache.r6g.large": _u(0.206, "node-hour"),
    "cache.r7g.large": _u(0.219, "node-hour"),
    "cache.r7g.xlarge": _u(0.437, "node-hour"),
    "cache.m7g.large": _u(0.158, "node-hour"),
}

NAT_GATEWAY_HOUR = _u(0.045, "NAT gateway-hour")
NAT_GB_PROCESSED = _u(0.045, "GB processed")
INTERFACE_ENDPOINT_AZ_HOUR = Price(0.01, "endpoint AZ-hour", _REPOST_AOSS, "2026-02", "S")
OPENSEARCH_OCU_HOUR = Price(0.24, "OCU-hour", _REPOST_AOSS, "2026-02", "S")

# Lambda on arm64 (cdk/bundling.py builds for ARM_64).
LAMBDA_REQUEST = _u(0.20 / 1e6, "request")
LAMBDA_ARM_GB_SECOND = _u(0.0000133334, "GB-second")

WEBSOCKET_MESSAGE = Price(1.00 / 1e6, "message (32 KB units)", _AWSFORENGINEERS, "2025-05-19", "S")
WEBSOCKET_CONNECTION_MINUTE = _u(0.25 / 1e6, "connection-minute")
HTTP_API_REQUEST = Price(1.00 / 1e6, "request", _AWSFORENGINEERS, "2025-05-19", "S")

SQS_FIFO_REQUEST = _u(0.50 / 1e6, "request (64 KB units)")

# An HTTPS health check with fast (10 s) interval and latency measurement: a basic check for an AWS
# endpoint plus three optional features (cdk/constructs/dns_records.py).
ROUTE53_HEALTH_CHECK_MONTH = _u(0.50 + 3 * 1.00, "health check-month")
CLOUDWATCH_DASHBOARD_MONTH = _u(3.00, "dashboard-month")
CLOUDWATCH_ALARM_MONTH = _u(0.10, "standard alarm-month")
KMS_KEY_MONTH = _u(1.00, "key-month")
SECRET_MONTH = _u(0.40, "secret-month (a replica counts as a secret)")


def aurora_price(instance_class: str) -> Price | None:
    return AURORA_INSTANCE_HOUR.get(instance_class)


def cache_price(node_type: str) -> Price | None:
    return CACHE_NODE_HOUR.get(node_type)


_SIZE_VCPUS = {
    "large": 2,
    "xlarge": 4,
    "2xlarge": 8,
    "4xlarge": 16,
    "8xlarge": 32,
    "12xlarge": 48,
    "16xlarge": 64,
}


def instance_vcpus(instance_class: str) -> int | None:
    """vCPUs of a db.r*/cache.* size (the Graviton and Intel memory-optimized families share them)."""
    return _SIZE_VCPUS.get(instance_class.rsplit(".", 1)[-1])
