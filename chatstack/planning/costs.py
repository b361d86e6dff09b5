"""Monthly cost lines for every resource the deployment config creates, at the planned traffic and
with no traffic at all. A resource whose price is unknown keeps its line, with no dollars."""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatstack.planning import prices
from chatstack.planning.model import EXTRA_POSTS_PER_ANSWER, CostLine, PlanInputs, RegionCapacity, WorkerCost
from chatstack.planning.prices import Price
from lambdas.wiring import AUTHORIZER, CONNECT, DISCONNECT, REST_API, SEND_MESSAGE

if TYPE_CHECKING:
    from cdk.config import DeploymentConfig
    from sagemaker_containers.profiles import CpuInstance, EmbeddingProfile, InstanceType, ModelProfile

    CatalogRow = InstanceType | CpuInstance

# cdk/constructs/service_endpoints.py: Secrets Manager, SQS, SageMaker runtime, KMS, X-Ray.
INTERFACE_ENDPOINT_SERVICES = 5
# cdk/constructs/service_alarms.py (target-tracking alarms that autoscaling creates are not counted).
SERVICE_ALARMS_PER_REGION = 6
# With standby replicas: one indexing and one search OCU at least (fact sheet 5.3).
MIN_OCUS_PER_COLLECTION = 2
# The Aurora master secret and the Valkey AUTH secret, each replicated to every secondary.
SECRETS_PER_REGION = 2


def line(
    item: str,
    region: str,
    quantity: float,
    price: Price | None,
    *,
    unit: str = "",
    idle_quantity: float = 0.0,
    bills_idle: bool = False,
    note: str = "",
) -> CostLine:
    usd = None if price is None else price.usd
    return CostLine(
        item=item,
        region=region,
        quantity=quantity,
        unit=price.unit if price is not None else unit,
        price_usd=usd,
        price_mark=price.mark if price is not None else "unknown",
        price_source=price.source + f" ({price.date})" if price is not None else "no price known",
        monthly_usd=None if usd is None else quantity * usd,
        bills_idle=bills_idle,
        idle_quantity=idle_quantity if bills_idle else 0.0,
        idle_monthly_usd=(idle_quantity * usd if usd is not None else None) if bills_idle else 0.0,
        note=note,
    )


def _sourced(override: float | None, row: CatalogRow | None) -> Price | None:
    if override is not None:
        return Price(override, "instance-hour", "the profile's price_per_hour_override_usd", "n/a", "set")
    if row is None or row.price_per_hour_usd is None:
        return None
    confidence = row.price_confidence
    if confidence == "none":
        return None
    return Price(row.price_per_hour_usd, "instance-hour", row.price_source, row.price_date, confidence)


def model_price(profile: ModelProfile) -> Price | None:
    return _sourced(profile.price_per_hour_override_usd, profile.instance)


def embedding_price(profile: EmbeddingProfile) -> Price | None:
    return _sourced(profile.price_per_hour_override_usd, profile.gpu_instance or profile.cpu_instance)


def region_lines(
    config: DeploymentConfig, profile: ModelProfile, inputs: PlanInputs, r: RegionCapacity, worker: WorkerCost
) -> list[CostLine]:
    hours = inputs.hours_per_month
    region = r.region
    answers = r.answers_per_s * 3600.0 * hours
    lines = [
        line(
            f"SageMaker endpoint ({profile.instance_type})",
            region,
            r.instances * hours,
            model_price(profile),
            unit="instance-hour",
            idle_quantity=r.idle_instances * hours,
            bills_idle=r.idle_instances > 0,
            note=f"{r.instances} instances planned, {r.idle_instances} at idle",
        )
    ]
    if config.embeddings.enabled:
        embed = config.embedding_profile
        lines.append(
            line(
                f"embedding endpoint ({embed.instance_type})",
                region,
                r.embedding_instances * hours,
                embedding_price(embed),
                unit="instance-hour",
                idle_quantity=embed.min_instances * hours,
                bills_idle=True,
                note=f"{r.embedding_instances} instances planned, {embed.min_instances} at idle",
            )
        )
    db = config.database
    db_instances = 1 + db.readers
    lines.append(
        line(
            f"Aurora PostgreSQL ({db.instance_class})",
            region,
            db_instances * hours,
            prices.aurora_price(db.instance_class),
            unit="instance-hour",
            idle_quantity=db_instances * hours,
            bills_idle=True,
            note=f"writer + {db.readers} readers; storage, I/O and backups not included",
        )
    )
    vcpus = prices.instance_vcpus(db.instance_class)
    proxy_hours = (vcpus or 0) * db_instances * hours
    lines.append(
        line(
            "RDS Proxy",
            region,
            proxy_hours,
            prices.RDS_PROXY_VCPU_HOUR if vcpus is not None else None,
            unit="vCPU-hour",
            idle_quantity=proxy_hours,
            bills_idle=True,
        )
    )
    nodes = 1 + config.cache.replicas
    lines.append(
        line(
            f"ElastiCache Valkey ({config.cache.node_type})",
            region,
            nodes * hours,
            prices.cache_price(config.cache.node_type),
            unit="node-hour",
            idle_quantity=nodes * hours,
            bills_idle=True,
            note=f"{nodes} nodes",
        )
    )
    nat_hours = config.network.nat_gateways * hours
    lines.append(
        line(
            "NAT gateways",
            region,
            nat_hours,
            prices.NAT_GATEWAY_HOUR,
            idle_quantity=nat_hours,
            bills_idle=True,
        )
    )
    posts = r.posts_per_s * 3600.0 * hours
    lines.append(
        line(
            "NAT data processed",
            region,
            posts * inputs.bytes_per_post / 1e9,
            prices.NAT_GB_PROCESSED,
            note=f"@connections posts at {inputs.bytes_per_post} bytes each",
        )
    )
    endpoint_services = INTERFACE_ENDPOINT_SERVICES + (1 if config.vector_store == "opensearch" else 0)
    endpoint_hours = endpoint_services * len(config.network.availability_zone_suffixes) * hours
    lines.append(
        line(
            "VPC interface endpoints",
            region,
            endpoint_hours,
            prices.INTERFACE_ENDPOINT_AZ_HOUR,
            idle_quantity=endpoint_hours,
            bills_idle=True,
            note=f"{endpoint_services} services x {len(config.network.availability_zone_suffixes)} AZs",
        )
    )
    if config.vector_store == "opensearch":
        ocu_hours = MIN_OCUS_PER_COLLECTION * hours
        lines.append(
            line(
                "OpenSearch Serverless",
                region,
                ocu_hours,
                prices.OPENSEARCH_OCU_HOUR,
                idle_quantity=ocu_hours,
                bills_idle=True,
                note="minimum OCUs with standby replicas; search load may add OCUs",
            )
        )
    lines.extend(_per_use_lines(inputs, r, worker, answers))
    lines.extend(_fixed_lines(config, region))
    return lines


def _per_use_lines(
    inputs: PlanInputs, r: RegionCapacity, worker: WorkerCost, answers: float
) -> list[CostLine]:
    hours = inputs.hours_per_month
    connections = inputs.users * r.share * inputs.reconnects_per_user_per_hour * hours
    rest = answers * inputs.rest_requests_per_message
    short = inputs.short_function_s
    short_gbs = (
        short
        * (
            connections * (AUTHORIZER.memory_mb + CONNECT.memory_mb + DISCONNECT.memory_mb)
            + answers * SEND_MESSAGE.memory_mb
            + rest * REST_API.memory_mb
        )
        / 1024.0
    )
    worker_invocations = worker.invocations_per_month * r.share
    requests = worker_invocations + 3 * connections + answers + rest
    posts = r.posts_per_s * 3600.0 * hours
    return [
        line("Lambda requests", r.region, requests, prices.LAMBDA_REQUEST),
        line(
            "Lambda compute",
            r.region,
            worker.gb_seconds_per_month * r.share + short_gbs,
            prices.LAMBDA_ARM_GB_SECOND,
            note="worker batched; other functions at their wiring memory",
        ),
        line(
            "API Gateway WebSocket messages",
            r.region,
            answers + posts,
            prices.WEBSOCKET_MESSAGE,
            note=f"sendMessage in; deltas, ack and done ({EXTRA_POSTS_PER_ANSWER} per answer) out",
        ),
        line(
            "API Gateway connection minutes",
            r.region,
            inputs.users * r.share * 60.0 * hours,
            prices.WEBSOCKET_CONNECTION_MINUTE,
            note="every user connected all month",
        ),
        line("API Gateway HTTP API requests", r.region, rest, prices.HTTP_API_REQUEST),
        line(
            "SQS FIFO requests",
            r.region,
            r.sqs_requests_per_month,
            prices.SQS_FIFO_REQUEST,
            idle_quantity=r.sqs_requests_per_month - answers * (1 + 2 / worker.batch_size),
            bills_idle=True,
            note="send, receive and delete per batch, plus the event source's empty polls",
        ),
    ]


def _fixed_lines(config: DeploymentConfig, region: str) -> list[CostLine]:
    lines = []
    if config.domain_name is not None:
        lines.append(
            line(
                "Route 53 health check",
                region,
                1,
                prices.ROUTE53_HEALTH_CHECK_MONTH,
                idle_quantity=1,
                bills_idle=True,
            )
        )
    dashboards = 2 if config.is_primary(region) else 1
    lines += [
        line(
            "CloudWatch dashboards",
            region,
            dashboards,
            prices.CLOUDWATCH_DASHBOARD_MONTH,
            idle_quantity=dashboards,
            bills_idle=True,
            note="operations" + (" and finance" if dashboards == 2 else ""),
        ),
        line(
            "CloudWatch alarms",
            region,
            SERVICE_ALARMS_PER_REGION,
            prices.CLOUDWATCH_ALARM_MONTH,
            idle_quantity=SERVICE_ALARMS_PER_REGION,
            bills_idle=True,
        ),
        line("KMS key", region, 1, prices.KMS_KEY_MONTH, idle_quantity=1, bills_idle=True),
        line(
            "Secrets Manager secrets",
            region,
            SECRETS_PER_REGION,
            prices.SECRET_MONTH,
            idle_quantity=SECRETS_PER_REGION,
            bills_idle=True,
        ),
    ]
    return lines
