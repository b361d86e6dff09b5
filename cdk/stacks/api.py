"""Per-region API stack: the functions of the wiring module, the WebSocket and REST APIs, the jobs
queue, and every grant, each naming only this deployment's resources."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aws_cdk import CfnElement, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.api_gateway_logging import ApiGatewayLogging
from cdk.constructs.aurora_primary import MASTER_USERNAME
from cdk.constructs.chat_functions import ChatFunctions
from cdk.constructs.cognito_issuer import SCOPES_CLAIM, TENANT_CLAIM
from cdk.constructs.jobs_queue import JobsQueue
from cdk.constructs.regional_value import RegionalValue, parameter_name, publish
from cdk.constructs.rest_api import HEALTH_PATH, RestHttpApi
from cdk.constructs.sweeper_schedule import SweeperSchedule
from cdk.constructs.vector_access import VectorAccessPolicy
from cdk.constructs.websocket_api import ChatWebSocketApi
from cdk.nag import acknowledge, wildcard
from cdk.stacks.base import ChatstackStack
from cdk.stacks.data import COLLECTION_ARN_KEY, COLLECTION_ENDPOINT_KEY, DataStack
from cdk.stacks.identity import ISSUER_KEYS
from cdk.stacks.inference import InferenceStack, endpoint_name
from cdk.stacks.network import NetworkStack
from lambdas import wiring
from sagemaker_containers.profiles import ProfileError

# Functions that post frames to connections (ack, deltas, errors, pong, replays).
POSTS_TO_CONNECTIONS = (
    wiring.SEND_MESSAGE,
    wiring.RESUME,
    wiring.CANCEL,
    wiring.PING,
    wiring.DEFAULT,
    wiring.WORKER,
)
# Functions that never open a database connection: they get no database secret (least privilege).
NO_DATABASE = (wiring.PING, wiring.DEFAULT, wiring.DISCONNECT)
# Functions that send generation jobs: sendMessage; the REST API's OpenAI-compatible completions
# (lambdas/api/routers/openai.py, the same pipeline); resume and the sweeper, which enqueue again a
# request whose worker died.
ENQUEUERS = (wiring.SEND_MESSAGE, wiring.REST_API, wiring.RESUME, wiring.SWEEPER)
# The Cognito trigger runs beside the user pool (identity stack), not in each region's API stack.
# The failover function runs only in secondary regions, outside the VPC (observability stack).
REGIONAL_FUNCTIONS = tuple(f for f in wiring.FUNCTIONS if f not in (wiring.PRE_TOKEN, wiring.FAILOVER))
# The primary's deep health URL, which each secondary's failover function probes.
HEALTH_URL_KEY = "rest-health-url"
# Functions that read or write document chunks in the vector collection, and so embed text.
USES_VECTORS = (wiring.WORKER, wiring.REST_API)
# The function that ingests documents: it writes every region's collection.
INGESTS = wiring.REST_API


def ingest_role_name(config: DeploymentConfig, region: str) -> str:
    """A fixed role name, so every region's collection policy can name every region's ingesting role
    without a cross-region reference (two API stacks naming each other's roles would be a cycle)."""
    return f"{config.name}-{region}-{INGESTS.name.replace('_', '-')}"


@dataclass(frozen=True, slots=True)
class Issuer:
    url: str
    jwks_url: str
    audience: str
    # The region whose identity stack published these (a Cognito pool); other regions read the
    # values from its SSM parameters at deploy time instead of importing them (weak references).
    published_in: str | None = None


class ApiStack(ChatstackStack):
    def __init__(
        self,
        scope: Construct,
        *,
        config: DeploymentConfig,
        region: str,
        network: NetworkStack,
        data: DataStack,
        inference: InferenceStack,
        issuer: Issuer,
        code: Callable[[wiring.Function], lambda_.Code],
        all_data: Mapping[str, DataStack] | None = None,
    ) -> None:
        """`all_data` is every region's data stack (this one included); without it, ingestion writes
        only this region's collection."""
        super().__init__(scope, "api", config=config, region=region)
        self.all_data = dict(all_data or {region: data})
        self.queue = JobsQueue(self, "Jobs", key=data.key, spec=wiring.JOBS_QUEUE, name_prefix=config.name)
        fallback_region = config.fallback_region(region)
        if issuer.published_in is not None and issuer.published_in != region:
            url, jwks_url, audience = (
                RegionalValue(
                    self,
                    "Issuer" + key.title().replace("-", ""),
                    name=parameter_name(config.name, issuer.published_in, key),
                    owner_region=issuer.published_in,
                ).value
                for key in ISSUER_KEYS
            )
            issuer = Issuer(url=url, jwks_url=jwks_url, audience=audience)
        environment = {
            "CHATSTACK_ENVIRONMENT": "cloud",
            "CHATSTACK_REGION": region,
            "CHATSTACK_SERVICE_NAME": config.name,
            # IAM auth through the proxy: functions get rds-db:connect as this user, never the secret.
            "CHATSTACK_DATABASE_USER": MASTER_USERNAME,
            "CHATSTACK_DATABASE_HOST": data.proxy.endpoint,
            # The proxy's read-only endpoint: what GET /readyz proves on a standby (secondary) region.
            "CHATSTACK_DATABASE_READER_HOST": data.proxy_reader_endpoint,
            "CHATSTACK_DATABASE_NAME": config.database.database_name,
            "CHATSTACK_REDIS_URL": data.cache.url,
            "CHATSTACK_REDIS_AUTH_SECRET_ID": data.redis_secret_name,
            "CHATSTACK_QUEUE_URL": self.queue.queue.queue_url,
            "CHATSTACK_MODEL_TRANSPORT": "sagemaker",
            "CHATSTACK_MODEL_ENDPOINT": inference.endpoint.endpoint_name,
            "CHATSTACK_MODEL_INFERENCE_COMPONENT": inference.inference_component_name,
            "CHATSTACK_MODEL_FALLBACK_ENDPOINT": endpoint_name(config),
            "CHATSTACK_MODEL_FALLBACK_REGION": fallback_region,
            "CHATSTACK_MODEL_PROFILE": config.model_profile,
            "CHATSTACK_MODEL_PRICE_PER_1K_OUTPUT_TOKENS_USD": _price_per_1k(config),
            "CHATSTACK_MODEL_MAX_CONTEXT_TOKENS": str(config.profile.max_model_len),
            # The LoRA profile's tenant -> adapter map; the worker sends each tenant's adapter.
            "CHATSTACK_TENANT_ADAPTERS": config.profile.tenant_adapters_setting(),
            "CHATSTACK_AUTH_ISSUER": issuer.url,
            "CHATSTACK_AUTH_JWKS_URL": issuer.jwks_url,
            "CHATSTACK_AUTH_AUDIENCE": issuer.audience,
            # The claims the pre-token trigger writes (cdk/constructs/cognito_issuer.py).
            "CHATSTACK_AUTH_TENANT_CLAIM": TENANT_CLAIM,
            "CHATSTACK_AUTH_SCOPES_CLAIM": SCOPES_CLAIM,
            "CHATSTACK_VECTOR_STORE": config.vector_store,
            "CHATSTACK_OPENSEARCH_ENDPOINT": data.collection.endpoint if data.collection else "",
            "CHATSTACK_EMBEDDINGS": "sagemaker",
            "CHATSTACK_EMBEDDING_ENDPOINT": config.embedding_endpoint_name,
            "POWERTOOLS_SERVICE_NAME": config.name,
            "POWERTOOLS_METRICS_NAMESPACE": "Chatstack",
        }
        self.functions = ChatFunctions(
            self,
            "Functions",
            code=code,
            specs=REGIONAL_FUNCTIONS,
            name_prefix=config.name,
            environment=environment,
            vpc=network.vpc,
            subnets=network.network.app_subnets,
            security_group=network.app_security_group,
            log_retention_days=config.api.log_retention_days,
        )
        fns = self.functions.functions
        ingest = fns[INGESTS.name]
        assert ingest.role is not None
        ingest_role = ingest.role.node.default_child
        assert isinstance(ingest_role, iam.CfnRole)
        ingest_role.role_name = ingest_role_name(config, region)
        if data.collection is not None:
            # Ingestion writes every region's collection; the store reads the one of CHATSTACK_REGION.
            ingest.add_environment("CHATSTACK_OPENSEARCH_ENDPOINT", Fn.join(",", self.collection_endpoints))
        ApiGatewayLogging(self, "ApiGatewayLogging")
        self.websocket = ChatWebSocketApi(
            self,
            "WebSocket",
            api_name=config.physical_name("chat"),
            functions=dict(fns),
            throttle_rate_limit=config.api.throttle_rate_limit,
            throttle_burst_limit=config.api.throttle_burst_limit,
            log_retention_days=config.api.log_retention_days,
        )
        self.functions.add_environment({"CHATSTACK_CONNECTIONS_URL": self.websocket.connections_url})
        self.rest = RestHttpApi(
            self,
            "Rest",
            api_name=config.physical_name("rest"),
            function=fns[wiring.REST_API.name],
            authorizer=fns[wiring.HTTP_AUTHORIZER.name],
            throttle_rate_limit=config.api.throttle_rate_limit,
            throttle_burst_limit=config.api.throttle_burst_limit,
            log_retention_days=config.api.log_retention_days,
        )
        self._grant(config, region, fallback_region, data, inference)
        if config.is_primary(region):
            publish(
                self,
                "SharedHealthUrl",
                name=parameter_name(config.name, region, HEALTH_URL_KEY),
                value=f"https://{self.rest.regional_host}{HEALTH_PATH}",
                description="the primary region's deep health URL (secondaries probe it)",
            )

    def _grant(
        self,
        config: DeploymentConfig,
        region: str,
        fallback_region: str,
        data: DataStack,
        inference: InferenceStack,
    ) -> None:
        fns = self.functions.functions
        for name, function in fns.items():
            if name not in {spec.name for spec in NO_DATABASE}:
                data.proxy.grant_connect(function, MASTER_USERNAME)
            data.redis_secret.grant_read(function)
        for spec in ENQUEUERS:
            self.queue.queue.grant_send_messages(fns[spec.name])
        SweeperSchedule(self, "Sweeper", function=fns[wiring.SWEEPER.name])
        fns[wiring.WORKER.name].add_event_source(self.queue.event_source())
        for spec in POSTS_TO_CONNECTIONS:
            self.websocket.grant_manage_connections(fns[spec.name])
        worker = fns[wiring.WORKER.name]
        worker.add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"],
                resources=self.endpoint_arns(config, (region, fallback_region), inference),
            )
        )
        # The REST API's deep /healthz reads the endpoint's status, and the fallback region's when this
        # region's does not serve (lambdas/adapters/model_health.py).
        fns[wiring.REST_API.name].add_to_role_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeEndpoint"],
                resources=self.endpoint_arns(config, (region, fallback_region), inference),
            )
        )
        embedding_arn = (
            f"arn:{Stack.of(self).partition}:sagemaker:{region}:{config.account}:endpoint/"
            f"{config.embedding_endpoint_name}"
        )
        for spec in USES_VECTORS:
            fns[spec.name].add_to_role_policy(
                iam.PolicyStatement(actions=["sagemaker:InvokeEndpoint"], resources=[embedding_arn])
            )
        if data.collection is not None:
            roles = []
            for spec in USES_VECTORS:
                function = fns[spec.name]
                collections = self.collection_arns if spec is INGESTS else [data.collection.arn]
                function.add_to_role_policy(
                    iam.PolicyStatement(actions=["aoss:APIAccessAll"], resources=collections)
                )
                assert function.role is not None
                roles.append(function.role)
            others = [
                f"arn:{Stack.of(self).partition}:iam::{config.account}:role/{ingest_role_name(config, other)}"
                for other in self.all_data
                if other != region
            ]
            VectorAccessPolicy(
                self,
                "VectorAccess",
                collection_name=data.collection.collection_name,
                roles=roles,
                principals=others,
            )
        websocket_cfn = self.websocket.api.node.default_child
        assert isinstance(websocket_cfn, CfnElement)
        api_id = self.resolve(self.get_logical_id(websocket_cfn))
        acknowledge(
            self.functions,
            [
                {
                    "id": wildcard(
                        f"Resource::arn:<AWS::Partition>:execute-api:{region}:{config.account}:<{api_id}>/"
                        f"{wiring.STAGE_NAME}/*/@connections/*"
                    ),
                    "reason": "Connection ids exist only at run time; "
                    "the grant is this API's stage's @connections only.",
                },
            ],
        )
        for spec in ENQUEUERS:
            acknowledge(
                fns[spec.name],
                [
                    {
                        "id": wildcard(f"Action::{action}"),
                        "reason": "CDK's SQS send grant on the KMS-encrypted queue: "
                        "data-key actions on this deployment's key only.",
                    }
                    for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*")
                ],
            )

    @property
    def _written_collections(self) -> list[DataStack]:
        """The data stacks whose collections ingestion writes: every region's, or only this one's."""
        if self.config.cross_region_vector_writes:
            return [d for d in self.all_data.values() if d.collection is not None]
        own = self.all_data[self.deployment_region]
        return [own] if own.collection is not None else []

    def _collection_value(self, data: DataStack, key: str) -> str:
        """This region's collection directly; another region's through its SSM parameter (weak)."""
        assert data.collection is not None
        if data.deployment_region == self.deployment_region:
            return data.collection.endpoint if key == COLLECTION_ENDPOINT_KEY else data.collection.arn
        found = self.node.try_find_child(f"{key}-{data.deployment_region}")
        if isinstance(found, RegionalValue):
            return found.value
        return RegionalValue(
            self,
            f"{key}-{data.deployment_region}",
            name=parameter_name(self.config.name, data.deployment_region, key),
            owner_region=data.deployment_region,
        ).value

    @property
    def collection_endpoints(self) -> list[str]:
        return [self._collection_value(d, COLLECTION_ENDPOINT_KEY) for d in self._written_collections]

    @property
    def collection_arns(self) -> list[str]:
        return [self._collection_value(d, COLLECTION_ARN_KEY) for d in self._written_collections]

    def endpoint_arns(
        self, config: DeploymentConfig, regions: tuple[str, ...], inference: InferenceStack
    ) -> list[str]:
        """This deployment's endpoint (and inference component) in this region and the fallback region."""
        stack = Stack.of(self)
        arns = []
        for region in regions:
            arns.append(
                f"arn:{stack.partition}:sagemaker:{region}:{config.account}:endpoint/{endpoint_name(config)}"
            )
            if inference.inference_component_name:
                arns.append(
                    f"arn:{stack.partition}:sagemaker:{region}:{config.account}:inference-component/"
                    f"{inference.inference_component_name}"
                )
        return arns


def _price_per_1k(config: DeploymentConfig) -> str:
    """The usage ledger's cost estimate: instance price per hour over the profile's throughput."""
    try:
        return f"{config.profile.cost_per_1k_output_tokens_usd():.8f}"
    except ProfileError:
        return "0"  # no dated price for this instance type: the ledger records tokens, cost 0
