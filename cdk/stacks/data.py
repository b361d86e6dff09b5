"""Per-region stateful data stack: KMS key, Aurora (global primary or secondary) with RDS Proxy,
Valkey (founding or joining the Global Datastore) and the vector collection."""

from __future__ import annotations

import json

from aws_cdk import ArnFormat, Fn, SecretValue
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.aurora_primary import AuroraGlobalPrimary
from cdk.constructs.aurora_secondary import AuroraGlobalSecondary
from cdk.constructs.data_key import DataKey
from cdk.constructs.database_proxy import DatabaseProxy
from cdk.constructs.regional_value import RegionalValue, parameter_name, publish
from cdk.constructs.valkey_cache import ValkeyCache
from cdk.constructs.vector_collection import VectorCollection
from cdk.nag import acknowledge
from cdk.stacks.base import ChatstackStack
from cdk.stacks.network import NetworkStack

# Parameter keys other regions read (parameter_name(deployment, owner region, key)).
SECRET_ID_KEY = "aurora-secret-id"
VALKEY_GLOBAL_KEY = "valkey-global-id"
COLLECTION_ENDPOINT_KEY = "collection-endpoint"
COLLECTION_ARN_KEY = "collection-arn"


class DataStack(ChatstackStack):
    """`database_secret`, `proxy`, `cache`, `collection` (or None with pgvector), `key`."""

    def __init__(
        self,
        scope: Construct,
        *,
        config: DeploymentConfig,
        region: str,
        network: NetworkStack,
        primary: DataStack | None,
    ) -> None:
        super().__init__(scope, "data", config=config, region=region)
        vpc, subnets, app_sg = network.vpc, network.network.data_subnets, network.app_security_group
        self.key = DataKey(self, "Key", alias=f"alias/{config.name}/data").key
        db = config.database
        self.db_cluster_id = config.physical_name("aurora", region)
        self.database_secret_name = f"{config.name}/aurora/master"
        self.redis_secret_name = f"{config.name}/valkey/auth"
        if primary is None:
            aurora = AuroraGlobalPrimary(
                self,
                "Aurora",
                vpc=vpc,
                subnets=subnets,
                key=self.key,
                global_cluster_id=config.physical_name("global"),
                cluster_id=self.db_cluster_id,
                secret_name=self.database_secret_name,
                replica_regions=list(config.secondary_regions),
                engine_version=db.engine_version,
                instance_class=db.instance_class,
                readers=db.readers,
                backup_retention_days=db.backup_retention_days,
                database_name=db.database_name,
                client_security_group=app_sg,
            )
            self.aurora_primary: AuroraGlobalPrimary | None = aurora
            # Secondaries read it when they deploy (a weak reference: cdk/constructs/regional_value.py).
            publish(
                self,
                "SharedSecretId",
                name=parameter_name(config.name, region, SECRET_ID_KEY),
                value=Fn.select(6, Fn.split(":", aurora.secret.secret_arn)),
                description="name-suffix of the Aurora master secret (its replicas share it)",
            )
            self.database_secret = aurora.secret
            cluster: rds.IDatabaseCluster = aurora.cluster
            cluster_sg = aurora.security_group
            self.redis_secret: secretsmanager.ISecret = secretsmanager.Secret(
                self,
                "ValkeyAuth",
                secret_name=self.redis_secret_name,
                description="Valkey AUTH token (replicated to every region)",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template=json.dumps({}),
                    generate_string_key="token",
                    exclude_punctuation=True,
                    include_space=False,
                    password_length=64,
                ),
                replica_regions=[secretsmanager.ReplicaRegion(region=r) for r in config.secondary_regions],
            )
            acknowledge(
                self.redis_secret,
                [
                    {
                        "id": "AwsSolutions-SMG4",
                        "reason": "A Valkey AUTH token changes "
                        "only through a coordinated ROTATE/SET on the Global Datastore "
                        "(docs/deploy.md runbook).",
                    }
                ],
            )
            auth_token = self.redis_secret.secret_value_from_json("token").unsafe_unwrap()
        else:
            assert primary.aurora_primary is not None
            secondary = AuroraGlobalSecondary(
                self,
                "Aurora",
                vpc=vpc,
                subnets=subnets,
                key=self.key,
                global_cluster_id=config.physical_name("global"),
                cluster_id=self.db_cluster_id,
                engine_version=db.engine_version,
                instance_class=db.instance_class,
                readers=db.readers,
                backup_retention_days=db.backup_retention_days,
                client_security_group=app_sg,
            )
            self.aurora_primary = None
            replica_arn = self.format_arn(
                service="secretsmanager",
                resource="secret",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
                resource_name=RegionalValue(
                    self,
                    "PrimarySecretId",
                    name=parameter_name(config.name, config.primary_region, SECRET_ID_KEY),
                    owner_region=config.primary_region,
                ).value,
            )
            self.database_secret = secretsmanager.Secret.from_secret_complete_arn(
                self, "DbSecret", replica_arn
            )
            cluster = secondary.imported
            cluster_sg = secondary.security_group
            self.redis_secret = secretsmanager.Secret.from_secret_name_v2(
                self, "ValkeyAuth", self.redis_secret_name
            )
            # Resolved by name in this region: the replica of the primary's secret.
            auth_token = SecretValue.secrets_manager(
                self.redis_secret_name, json_field="token"
            ).unsafe_unwrap()
        proxy = DatabaseProxy(
            self,
            "Proxy",
            vpc=vpc,
            subnets=subnets,
            cluster=cluster,
            cluster_security_group=cluster_sg,
            secret=self.database_secret,
            client_security_group=app_sg,
            proxy_name=config.physical_name("db"),
            max_connections_percent=db.proxy_max_connections_percent,
        )
        self.proxy = proxy.proxy
        self.proxy_reader_endpoint = proxy.reader_endpoint
        if primary is not None:
            # The proxy's target group registers the cluster only once an instance is up.
            self.proxy.node.add_dependency(*secondary.instances)
        cache = config.cache
        # One region founds no Global Datastore: there is nobody to replicate to.
        joins_global = config.routing_policy == "failover" and bool(config.secondary_regions)
        join_global_id: str | None = None
        if primary is not None and joins_global:
            join_global_id = RegionalValue(
                self,
                "PrimaryGlobalDatastoreId",
                name=parameter_name(config.name, config.primary_region, VALKEY_GLOBAL_KEY),
                owner_region=config.primary_region,
            ).value
        self.cache: ValkeyCache = ValkeyCache(
            self,
            "Cache",
            vpc=vpc,
            subnets=subnets,
            key=self.key,
            client_security_group=app_sg,
            replication_group_id=config.physical_name("valkey"),
            auth_token=auth_token,
            engine_version=cache.engine_version,
            node_type=cache.node_type,
            replicas=cache.replicas,
            port=cache.port,
            join_global_id=join_global_id,
            found_global_suffix=config.physical_name("valkey") if primary is None and joins_global else None,
        )
        # The Global Datastore this region's group joined (a secondary's failover promotes it).
        self.valkey_global_id = join_global_id
        if self.cache.global_datastore is not None:
            publish(
                self,
                "SharedGlobalDatastoreId",
                name=parameter_name(config.name, region, VALKEY_GLOBAL_KEY),
                value=self.cache.global_datastore.attr_global_replication_group_id,
                description="generated id of the Valkey Global Datastore (secondaries join it)",
            )
        self.collection: VectorCollection | None = None
        if config.vector_store == "opensearch":
            self.collection = VectorCollection(
                self,
                "Vectors",
                collection_name=config.physical_name("docs"),
                vpc=vpc,
                subnets=network.network.app_subnets,
                client_security_group=app_sg,
                cross_region_writes=config.cross_region_vector_writes,
            )
            for key, value in (
                (COLLECTION_ENDPOINT_KEY, self.collection.endpoint),
                (COLLECTION_ARN_KEY, self.collection.arn),
            ):
                publish(
                    self,
                    "Shared" + key.title().replace("-", ""),
                    name=parameter_name(config.name, region, key),
                    value=value,
                    description=f"vector collection {key.split('-')[1]} (other regions' ingestion writes it)",
                )
