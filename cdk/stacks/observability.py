"""Per-region observability stack: the alarm topic, the alarms and the operations dashboard."""

from __future__ import annotations

from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.alarm_topic import AlarmTopic
from cdk.constructs.operations_dashboard import OperationsDashboard
from cdk.constructs.service_alarms import ServiceAlarms
from cdk.stacks.api import ApiStack
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
    ) -> None:
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
