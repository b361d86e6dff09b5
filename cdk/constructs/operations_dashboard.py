"""The operations dashboard of one region: traffic, latency users feel, errors, queue, GPU, data tier."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk import service_metrics as sm
from cdk.constructs.lmi_endpoint import VARIANT

PERIOD = Duration.minutes(1)


def _metric(
    namespace: str, name: str, dims: dict[str, str], stat: str = "Sum", label: str | None = None
) -> cw.Metric:
    return cw.Metric(
        namespace=namespace, metric_name=name, dimensions_map=dims, statistic=stat, period=PERIOD, label=label
    )


class OperationsDashboard(Construct):
    """`dashboard`, named `<deployment>-ops-<region>`."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        dashboard_name: str,
        websocket_api_id: str,
        stage: str,
        functions: Mapping[str, lambda_.IFunction],
        queue: sqs.IQueue,
        dead_letters: sqs.IQueue,
        endpoint_name: str,
        model: str,
        db_cluster_id: str,
        cache_node_ids: list[str],
    ) -> None:
        super().__init__(scope, id)
        ws = {"ApiId": websocket_api_id, "Stage": stage}
        endpoint = {"EndpointName": endpoint_name, "VariantName": VARIANT}
        model_dims = sm.DIMENSIONS
        db = {"DBClusterIdentifier": db_cluster_id}
        self.dashboard = cw.Dashboard(
            self, "Dashboard", dashboard_name=dashboard_name, default_interval=Duration.hours(3)
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Connections and messages",
                width=12,
                left=[
                    _metric("AWS/ApiGateway", "ConnectCount", ws, label="connects"),
                    _metric("AWS/ApiGateway", "MessageCount", ws, label="messages"),
                    _metric(sm.NAMESPACE, sm.CONNECTIONS, model_dims, label="connections registered"),
                ],
            ),
            cw.GraphWidget(
                title="Time to first token (ms)",
                width=6,
                left=[
                    _metric(sm.NAMESPACE, sm.TIME_TO_FIRST_TOKEN, model_dims, "p50", f"{model} p50"),
                    _metric(sm.NAMESPACE, sm.TIME_TO_FIRST_TOKEN, model_dims, "p90", f"{model} p90"),
                    _metric(sm.NAMESPACE, sm.TIME_TO_FIRST_TOKEN, model_dims, "p99", f"{model} p99"),
                ],
            ),
            cw.GraphWidget(
                title="Output tokens per second (all streams)",
                width=6,
                left=[
                    cw.MathExpression(
                        expression="tokens / PERIOD(tokens)",
                        using_metrics={"tokens": _metric(sm.NAMESPACE, sm.OUTPUT_TOKENS, model_dims)},
                        label=f"{model} tokens/s",
                        period=PERIOD,
                    )
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Lambda errors",
                width=8,
                left=[fn.metric_errors(period=PERIOD, label=name) for name, fn in functions.items()],
            ),
            cw.GraphWidget(
                title="Lambda throttles",
                width=8,
                left=[fn.metric_throttles(period=PERIOD, label=name) for name, fn in functions.items()],
            ),
            cw.GraphWidget(
                title="API errors",
                width=8,
                left=[
                    _metric("AWS/ApiGateway", "IntegrationError", ws, label="integration"),
                    _metric("AWS/ApiGateway", "ClientError", ws, label="client"),
                    _metric("AWS/ApiGateway", "ExecutionError", ws, label="execution"),
                    _metric(sm.NAMESPACE, sm.GENERATION_ERRORS, model_dims, label="generation"),
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Queue age (s) and dead letters",
                width=8,
                left=[queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum")],
                right=[
                    dead_letters.metric_approximate_number_of_messages_visible(
                        period=PERIOD, statistic="Maximum", label="dead letters"
                    )
                ],
            ),
            cw.GraphWidget(
                title="Endpoint concurrency per model",
                width=8,
                left=[
                    _metric(
                        "AWS/SageMaker", "ConcurrentRequestsPerModel", endpoint, "Average", "concurrency"
                    ),
                    _metric(sm.NAMESPACE, sm.JOBS_FAILED, model_dims, label="jobs failed"),
                ],
            ),
            cw.GraphWidget(
                title="GPU utilisation and memory (%)",
                width=8,
                left=[
                    _metric("/aws/sagemaker/Endpoints", "GPUUtilization", endpoint, "Average", "GPU"),
                    _metric(
                        "/aws/sagemaker/Endpoints", "GPUMemoryUtilization", endpoint, "Average", "GPU memory"
                    ),
                ],
            ),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(
                title="Aurora",
                width=12,
                left=[
                    _metric("AWS/RDS", "CPUUtilization", db, "Maximum", "CPU %"),
                    _metric("AWS/RDS", "DatabaseConnections", db, "Maximum", "connections"),
                ],
                right=[_metric("AWS/RDS", "AuroraGlobalDBReplicationLag", db, "Maximum", "global lag (ms)")],
            ),
            cw.GraphWidget(
                title="Valkey",
                width=12,
                left=[
                    _metric(
                        "AWS/ElastiCache", "EngineCPUUtilization", {"CacheClusterId": node}, "Maximum", node
                    )
                    for node in cache_node_ids
                ],
                right=[
                    _metric(
                        "AWS/ElastiCache",
                        "DatabaseMemoryUsagePercentage",
                        {"CacheClusterId": cache_node_ids[0]},
                        "Maximum",
                        "memory %",
                    ),
                ],
            ),
        )
