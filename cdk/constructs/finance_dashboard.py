"""The finance dashboard: tokens and dollars by model and region, GPU instance-hours, spend vs budget.

GPU instance-hours come from the sample count of the endpoint's per-instance `CPUUtilization`
(one datapoint per instance per minute), so no extra metric is needed. GPU dollars multiply those
hours by the profile's on-demand price: an estimate; billed cost is `AWS/Billing` (us-east-1 only).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from constructs import Construct

from cdk import service_metrics as sm
from cdk.constructs.lmi_endpoint import VARIANT

HOUR = Duration.hours(1)


class FinanceDashboard(Construct):
    """`dashboard`, one for the deployment, with a widget series per region."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        dashboard_name: str,
        regions: tuple[str, ...],
        model: str,
        endpoint_name: str,
        price_per_instance_hour_usd: float,
        monthly_budget_usd: float,
    ) -> None:
        super().__init__(scope, id)
        tokens: list[cw.IMetric] = []
        hours: list[cw.IMetric] = []
        gpu_dollars: list[cw.IMetric] = []
        per_1k_tokens: list[cw.IMetric] = []
        for i, region in enumerate(regions):
            for name in (sm.INPUT_TOKENS, sm.OUTPUT_TOKENS):
                tokens.append(
                    cw.Metric(
                        namespace=sm.NAMESPACE,
                        metric_name=name,
                        dimensions_map=sm.DIMENSIONS,
                        statistic="Sum",
                        period=HOUR,
                        region=region,
                        label=f"{name} {model} {region}",
                    )
                )
            samples = cw.Metric(
                namespace="/aws/sagemaker/Endpoints",
                metric_name="CPUUtilization",
                dimensions_map={"EndpointName": endpoint_name, "VariantName": VARIANT},
                statistic="SampleCount",
                period=HOUR,
                region=region,
            )
            output = cw.Metric(
                namespace=sm.NAMESPACE,
                metric_name=sm.OUTPUT_TOKENS,
                dimensions_map=sm.DIMENSIONS,
                statistic="Sum",
                period=HOUR,
                region=region,
            )
            hours.append(
                cw.MathExpression(
                    expression=f"s{i} / 60",
                    using_metrics={f"s{i}": samples},
                    label=f"instance-hours {region}",
                    period=HOUR,
                )
            )
            gpu_dollars.append(
                cw.MathExpression(
                    expression=f"s{i} / 60 * {price_per_instance_hour_usd}",
                    using_metrics={f"s{i}": samples},
                    label=f"$ {model} {region} (on-demand estimate)",
                    period=HOUR,
                )
            )
            per_1k_tokens.append(
                cw.MathExpression(
                    expression=f"(s{i} / 60 * {price_per_instance_hour_usd}) / (o{i} / 1000)",
                    using_metrics={f"s{i}": samples, f"o{i}": output},
                    label=f"$ per 1k output tokens {model} {region}",
                    period=HOUR,
                )
            )
        billing = cw.Metric(
            namespace="AWS/Billing",
            metric_name="EstimatedCharges",
            dimensions_map={"Currency": "USD"},
            statistic="Maximum",
            period=Duration.hours(6),
            region="us-east-1",
            label="month-to-date charges (account)",
        )
        self.dashboard = cw.Dashboard(
            self, "Dashboard", dashboard_name=dashboard_name, default_interval=Duration.days(7)
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="Tokens by model and region (per hour)", width=12, left=tokens),
            cw.GraphWidget(title="GPU dollars by model and region (per hour)", width=12, left=gpu_dollars),
        )
        self.dashboard.add_widgets(
            cw.GraphWidget(title="GPU instance-hours", width=8, left=hours),
            cw.GraphWidget(title="Dollars per 1k output tokens", width=8, left=per_1k_tokens),
            cw.GraphWidget(
                title="Spend against the monthly budget",
                width=8,
                left=[billing],
                left_annotations=[cw.HorizontalAnnotation(value=monthly_budget_usd, label="monthly budget")],
            ),
        )
