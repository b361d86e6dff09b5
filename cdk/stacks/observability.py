"""Per-region observability stack: the alarm topic, the alarms and the operations dashboard."""

from __future__ import annotations

from collections.abc import Callable

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.alarm_topic import AlarmTopic
from cdk.constructs.automatic_failover import AutomaticFailover
from cdk.constructs.chat_functions import ChatFunctions
from cdk.constructs.operations_dashboard import OperationsDashboard
from cdk.constructs.regional_value import RegionalValue, parameter_name
from cdk.constructs.service_alarms import ServiceAlarms
from cdk.stacks.api import HEALTH_URL_KEY, ApiStack
from cdk.stacks.base import ChatstackStack
from cdk.stacks.data import DataStack
from cdk.stacks.inference import InferenceStack
from lambdas import wiring


class ObservabilityStack(ChatstackStack):
    def __init__(
        self,
        scope: Construct,
        *,
        config: DeploymentConfig,
        region: str,
        data: DataStack,
        inference: InferenceStack,
        api: ApiStack,
        code: Callable[[wiring.Function], lambda_.Code] | None = None,
    ) -> None:
        """`code` builds the failover function's asset (secondary regions with automatic failover)."""
        super().__init__(scope, "observability", config=config, region=region)
        self.topic = AlarmTopic(
            self, "Alarms", topic_name=config.physical_name("alarms"), key=data.key, email=config.alarm_email
        ).topic
        functions = dict(api.functions.functions)
        self.alarms = ServiceAlarms(
            self,
            "ServiceAlarms",
            topic=self.topic,
            worker=functions[wiring.WORKER.name],
            queue=api.queue.queue,
            dead_letters=api.queue.dead_letters,
            endpoint_name=inference.endpoint.endpoint_name,
            db_cluster_id=data.db_cluster_id,
            global_replica=not config.is_primary(region),
        )
        self.dashboard = OperationsDashboard(
            self,
            "Operations",
            dashboard_name=config.physical_name("ops", region),
            websocket_api_id=api.websocket.api.api_id,
            stage=wiring.STAGE_NAME,
            functions=functions,
            queue=api.queue.queue,
            dead_letters=api.queue.dead_letters,
            endpoint_name=inference.endpoint.endpoint_name,
            model=config.model_profile,
            db_cluster_id=data.db_cluster_id,
            cache_node_ids=data.cache.node_ids,
        ).dashboard
        self.failover: AutomaticFailover | None = None
        if config.automatic_failover and not config.is_primary(region) and code is not None:
            self.failover = self._automatic_failover(config, region, data, code)

    def _automatic_failover(
        self,
        config: DeploymentConfig,
        region: str,
        data: DataStack,
        code: Callable[[wiring.Function], lambda_.Code],
    ) -> AutomaticFailover:
        primary = config.primary_region
        probe_url = RegionalValue(
            self,
            "PrimaryHealthUrl",
            name=parameter_name(config.name, primary, HEALTH_URL_KEY),
            owner_region=primary,
        ).value
        cluster_arn = f"arn:{self.partition}:rds:{region}:{config.account}:cluster:{data.db_cluster_id}"
        environment = {
            "CHATSTACK_ENVIRONMENT": "cloud",
            "CHATSTACK_REGION": region,
            "CHATSTACK_SERVICE_NAME": config.name,
            "CHATSTACK_FAILOVER_PRIMARY_REGION": primary,
            "CHATSTACK_FAILOVER_PROBE_URL": probe_url,
            "CHATSTACK_FAILOVER_GLOBAL_CLUSTER_ID": config.physical_name("global"),
            "CHATSTACK_FAILOVER_CLUSTER_ARN": cluster_arn,
            "CHATSTACK_FAILOVER_VALKEY_GLOBAL_ID": data.valkey_global_id or "",
            "CHATSTACK_FAILOVER_VALKEY_GROUP_ID": config.physical_name("valkey"),
            "POWERTOOLS_SERVICE_NAME": config.name,
        }
        functions = ChatFunctions(
            self,
            "Functions",
            code=code,
            specs=(wiring.FAILOVER,),
            name_prefix=config.name,
            environment=environment,
            log_retention_days=config.api.log_retention_days,
        )
        return AutomaticFailover(
            self,
            "Failover",
            function=functions[wiring.FAILOVER.name],
            primary_region=primary,
            global_cluster_id=config.physical_name("global"),
            member_clusters={r: config.physical_name("aurora", r) for r in config.regions},
            valkey_global_id=data.valkey_global_id,
            valkey_group_id=config.physical_name("valkey"),
            probe_failures=config.failover.probe_failures,
            topic=self.topic,
        )
