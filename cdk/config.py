"""The one typed, frozen deployment config, validated before any construct is built.

Sources, later ones winning: the config file named by the `config` context key (cdk.json sets
`cdk.config.example.json`; `-c config=FILE` or CHATSTACK_CDK_CONFIG picks another), then the
`chatstack` context key (a JSON object of overrides, e.g. `-c chatstack='{"alarm_email": "..."}'`).
Every failure is a `ConfigError` whose message is one sentence naming the field.

Nothing here calls AWS: regions are checked against botocore's bundled endpoint table and model
profiles against `sagemaker_containers.profiles`, both offline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from sagemaker_containers.profiles import EmbeddingProfile, ModelProfile

DEFAULT_CONFIG_FILE = "cdk.config.example.json"
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_HOSTED_ZONE = re.compile(r"^Z[A-Z0-9]{4,31}$")


class ConfigError(ValueError):
    """A deployment config that cannot be synthesized; the message is one sentence naming the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NetworkConfig(_Frozen):
    cidr: str = Field(default="10.40.0.0/16", pattern=r"^\d{1,3}(\.\d{1,3}){3}/(1[6-9]|2[0-4])$")
    # One NAT gateway per AZ keeps egress alive when an AZ fails; fewer saves money in test accounts.
    nat_gateways: int = Field(default=3, ge=1, le=3)
    flow_log_retention_days: int = Field(default=90, ge=1)
    # Named, not looked up: synth must not ask the account which AZs it has. Three different ones: the
    # subnets, NAT gateways and the database's and cache's subnet groups spread over them.
    availability_zone_suffixes: tuple[str, str, str] = ("a", "b", "c")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        import ipaddress

        try:
            network = ipaddress.IPv4Network(value)  # strict: no host bits set
        except ValueError as exc:
            raise ValueError(f"'{value}' is not an IPv4 network: {exc}") from None
        if not network.is_private:
            raise ValueError(f"'{value}' is not a private (RFC 1918) range")
        return value

    @field_validator("availability_zone_suffixes")
    @classmethod
    def _azs(cls, value: tuple[str, str, str]) -> tuple[str, str, str]:
        if any(not re.fullmatch(r"[a-z]", suffix) for suffix in value):
            raise ValueError("each suffix is one lower-case letter, as in us-east-1a")
        if len(set(value)) != len(value):
            raise ValueError("the three suffixes must name three different Availability Zones")
        return value


class DatabaseConfig(_Frozen):
    engine_version: str = Field(default="16.8", pattern=r"^1[4-7]\.\d+$")
    # Aurora Global Database needs memory-optimized (db.r*) instances.
    instance_class: str = Field(default="db.r7g.large", pattern=r"^db\.r[0-9][a-z]*\.[a-z0-9]+$")
    readers: int = Field(default=1, ge=0, le=15)
    backup_retention_days: int = Field(default=7, ge=1, le=35)
    database_name: str = Field(default="chatstack", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    proxy_max_connections_percent: int = Field(default=90, ge=1, le=100)


class CacheConfig(_Frozen):
    engine_version: str = Field(default="7.2", pattern=r"^[7-9]\.\d+$")
    # Global Datastore needs large-or-bigger M/R/C7gn nodes.
    node_type: str = Field(default="cache.r7g.large", pattern=r"^cache\.(m|r|c7gn|c8gn)[0-9a-z]*\.[a-z0-9]+$")
    replicas: int = Field(default=2, ge=1, le=5)
    port: int = Field(default=6380, ge=1024, le=65535)


class ApiConfig(_Frozen):
    throttle_rate_limit: int = Field(default=2000, ge=1)
    throttle_burst_limit: int = Field(default=1000, ge=1)
    log_retention_days: int = Field(default=30, ge=1)


class IdentityConfig(_Frozen):
    """An existing OIDC issuer; when `issuer` is empty the deployment creates a Cognito user pool."""

    issuer: str | None = Field(default=None, pattern=r"^https://[^\s]+[^/]$")
    audience: str | None = None
    jwks_url: str | None = Field(default=None, pattern=r"^https://[^\s]+$")


class InferenceConfig(_Frozen):
    # None keeps the profile's choice; true deploys through inference components (scale to zero).
    inference_components: bool | None = None
    scale_to_zero: bool = False
    # Where the weights were staged (an s3:// prefix; `{account}` and `{region}` are filled per
    # region, so each endpoint reads a bucket of its own region). The container then never downloads
    # from the Hugging Face hub and needs no HF token. Empty keeps the profile's model_id.
    weights_s3_uri: str | None = Field(default=None, pattern=r"^s3://[a-z0-9{}.-]{3,80}/\S*$")
    # The hosting AMI (NVIDIA driver) of the LMI variant; empty picks the one the image's CUDA needs.
    ami_version: str | None = None


class EmbeddingsConfig(_Frozen):
    """The per-region TEI endpoint that embeds queries (worker) and chunks (REST ingestion).

    The Lambda bundle carries no embedding model, so RAG in the cloud always needs an endpoint:
    this deployment's own (`enabled`, the default) or an existing one named by `existing_endpoint`.
    """

    enabled: bool = True
    profile: str = "minilm-l6-v2-cpu"
    instance_type: str | None = None
    min_instances: int | None = Field(default=None, ge=1)
    max_instances: int | None = Field(default=None, ge=1)
    existing_endpoint: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class OpenSearchConfig(_Frozen):
    # Ingestion writes every region's collection. A function reaches another region's collection over
    # its public endpoint (SigV4 + data access policy naming the role); false keeps every collection
    # VPC-only and each region's REST function writes only its own region.
    cross_region_writes: bool = True


class FailoverConfig(_Frozen):
    # Promote a secondary region by itself when it cannot reach the primary for `probe_failures`
    # minutes in a row (cdk/constructs/automatic_failover.py); false leaves it to an operator
    # (`chatstack region failover`). Only with routing_policy 'failover' and a secondary region.
    automatic: bool = True
    probe_failures: int = Field(default=3, ge=2, le=30)


class DeploymentConfig(_Frozen):
    """Everything that differs between deployments. Environments differ by this object only."""

    name: str = Field(default="chatstack", pattern=r"^[a-z][a-z0-9-]{1,18}[a-z0-9]$")
    account: str = Field(default="111111111111", pattern=r"^\d{12}$")
    primary_region: str
    # Empty is a one-region deployment (a dev stack: no Global Database members, no failover).
    secondary_regions: tuple[str, ...] = ()
    domain_name: str | None = None
    hosted_zone_id: str | None = None
    routing_policy: Literal["failover", "latency"] = "failover"
    websocket_subdomain: str = Field(default="ws", pattern=r"^[a-z0-9-]{1,63}$")
    rest_subdomain: str = Field(default="api", pattern=r"^[a-z0-9-]{1,63}$")
    model_profile: str = "llama-3.1-8b-instruct"
    vector_store: Literal["opensearch", "pgvector"] = "opensearch"
    alarm_email: str
    monthly_budget_usd: float = Field(gt=0, allow_inf_nan=False)
    tags: dict[str, str] = Field(default_factory=dict)
    network: NetworkConfig = NetworkConfig()
    database: DatabaseConfig = DatabaseConfig()
    cache: CacheConfig = CacheConfig()
    api: ApiConfig = ApiConfig()
    identity: IdentityConfig = IdentityConfig()
    inference: InferenceConfig = InferenceConfig()
    embeddings: EmbeddingsConfig = EmbeddingsConfig()
    opensearch: OpenSearchConfig = OpenSearchConfig()
    failover: FailoverConfig = FailoverConfig()

    @property
    def regions(self) -> tuple[str, ...]:
        return (self.primary_region, *self.secondary_regions)

    def is_primary(self, region: str) -> bool:
        return region == self.primary_region

    def fallback_region(self, region: str) -> str:
        """Where a region's worker sends generations when its own endpoint fails."""
        if not self.secondary_regions:
            return region  # one region: the circuit breaker has nowhere else to go
        return self.secondary_regions[0] if self.is_primary(region) else self.primary_region

    @cached_property
    def profile(self) -> ModelProfile:
        from sagemaker_containers.profiles import get_profile

        return get_profile(self.model_profile)

    @cached_property
    def embedding_profile(self) -> EmbeddingProfile:
        """The ready embedding profile with this config's instance overrides applied (and re-validated)."""
        from sagemaker_containers.profiles import EmbeddingProfile, get_embedding_profile

        chosen = self.embeddings
        overrides = {
            key: value
            for key, value in (
                ("instance_type", chosen.instance_type),
                ("min_instances", chosen.min_instances),
                ("max_instances", chosen.max_instances),
            )
            if value is not None
        }
        data = get_embedding_profile(chosen.profile).model_dump()
        data.update(overrides)
        if "min_instances" in overrides:
            data["instance_count"] = overrides["min_instances"]
        return EmbeddingProfile.model_validate(data)

    @property
    def embedding_endpoint_name(self) -> str:
        """The same name in every region (or the existing endpoint's name)."""
        if not self.embeddings.enabled:
            return str(self.embeddings.existing_endpoint)
        return self.physical_name("embed")

    @property
    def cross_region_vector_writes(self) -> bool:
        return (
            self.vector_store == "opensearch"
            and self.opensearch.cross_region_writes
            and len(self.regions) > 1
        )

    def weights_uri(self, region: str) -> str:
        """The model weights this region's endpoint loads: the staged S3 prefix, or the profile's id."""
        staged = self.inference.weights_s3_uri
        if staged is None:
            return self.profile.model_id
        return staged.replace("{account}", self.account).replace("{region}", region)

    @property
    def automatic_failover(self) -> bool:
        return self.failover.automatic and self.routing_policy == "failover" and bool(self.secondary_regions)

    @property
    def use_inference_components(self) -> bool:
        chosen = self.inference.inference_components
        return self.profile.use_inference_components if chosen is None else chosen

    @property
    def uses_cognito(self) -> bool:
        return self.identity.issuer is None

    @property
    def websocket_domain(self) -> str:
        return f"{self.websocket_subdomain}.{self.domain_name}"

    @property
    def rest_domain(self) -> str:
        return f"{self.rest_subdomain}.{self.domain_name}"

    def physical_name(self, *parts: str) -> str:
        """A deterministic resource name: explicit names let other regions and IAM refer to it."""
        return "-".join((self.name, *parts))

    @property
    def cost_tags(self) -> dict[str, str]:
        """Cost-allocation tags put on every resource (activate them once in the Billing console)."""
        return {"chatstack:deployment": self.name, "chatstack:component": "chatstack", **self.tags}


def _partition_of_region() -> dict[str, str]:
    """Each region of the commercial, China and GovCloud partitions, with its partition, from
    botocore's bundled table."""
    import botocore.session

    session = botocore.session.get_session()
    return {
        region: partition
        for partition in ("aws", "aws-cn", "aws-us-gov")
        for region in session.get_available_regions("sagemaker", partition_name=partition)
    }


def known_regions() -> frozenset[str]:
    """Regions of the commercial, China and GovCloud partitions, from botocore's bundled table."""
    return frozenset(_partition_of_region())


def _check(config: DeploymentConfig) -> None:
    partition_of = _partition_of_region()
    known = frozenset(partition_of)
    if config.primary_region not in known:
        raise ConfigError(f"primary_region '{config.primary_region}' is not a known AWS region.")
    for region in config.secondary_regions:
        if region not in known:
            raise ConfigError(f"secondary_regions names '{region}', which is not a known AWS region.")
    partitions = {partition_of[region] for region in config.regions}
    if len(partitions) > 1:
        raise ConfigError(
            "primary_region and secondary_regions must be in one AWS partition (an account, an Aurora global "
            f"database and a Global Datastore do not span partitions); these span {sorted(partitions)}."
        )
    reserved = sorted(key for key in config.tags if key.lower().startswith("aws:"))
    if reserved:
        raise ConfigError(f"tags names '{reserved[0]}', but tag keys that start with 'aws:' are AWS's own.")
    if config.primary_region in config.secondary_regions:
        raise ConfigError(f"secondary_regions must not contain the primary region '{config.primary_region}'.")
    if len(set(config.secondary_regions)) != len(config.secondary_regions):
        raise ConfigError("secondary_regions lists the same region twice.")
    if len(config.secondary_regions) > 2:
        raise ConfigError(
            "secondary_regions names more than two regions, but an ElastiCache Global Datastore "
            "replicates to at most two."
        )
    if config.domain_name is not None and config.hosted_zone_id is None:
        raise ConfigError("hosted_zone_id is required when domain_name is set.")
    if config.hosted_zone_id is not None and config.domain_name is None:
        raise ConfigError("domain_name is required when hosted_zone_id is set.")
    if config.domain_name is not None and not _DOMAIN.match(config.domain_name):
        raise ConfigError(f"domain_name '{config.domain_name}' is not a lower-case DNS name.")
    if config.hosted_zone_id is not None and not _HOSTED_ZONE.match(config.hosted_zone_id):
        raise ConfigError(f"hosted_zone_id '{config.hosted_zone_id}' is not a Route 53 hosted zone id.")
    if config.websocket_subdomain == config.rest_subdomain:
        raise ConfigError("websocket_subdomain and rest_subdomain must differ (one custom domain per API).")
    if config.routing_policy == "failover" and len(config.secondary_regions) > 1:
        raise ConfigError(
            "routing_policy 'failover' supports at most one secondary region; use 'latency' for more."
        )
    if not _EMAIL.match(config.alarm_email):
        raise ConfigError(f"alarm_email '{config.alarm_email}' is not an email address.")
    if config.identity.issuer is not None and not config.identity.audience:
        raise ConfigError("identity.audience is required when identity.issuer is set.")
    if config.identity.issuer is None and (config.identity.audience or config.identity.jwks_url):
        raise ConfigError("identity.issuer is required when identity.audience or identity.jwks_url is set.")
    _check_profile(config)
    _check_embeddings(config)


def _check_embeddings(config: DeploymentConfig) -> None:
    from sagemaker_containers.profiles import ProfileError, validate_embedding_profile

    chosen = config.embeddings
    if not chosen.enabled:
        if not chosen.existing_endpoint:
            raise ConfigError(
                "embeddings.existing_endpoint is required when embeddings.enabled is false, "
                "because the Lambda bundle carries no embedding model."
            )
        return
    if chosen.existing_endpoint:
        raise ConfigError("embeddings.existing_endpoint is only used when embeddings.enabled is false.")
    try:
        profile = config.embedding_profile
        validate_embedding_profile(profile)
        profile.instance_price_per_hour_usd  # noqa: B018  # docs/deploy.md prices the idle endpoint
        for region in config.regions:
            profile.image_uri(region)
    except ProfileError as error:
        raise ConfigError(f"embeddings.profile '{chosen.profile}': {_sentence(error.message)}") from None
    except ValidationError as error:
        raise ConfigError(f"embeddings: {_describe(error)}") from None


def _check_profile(config: DeploymentConfig) -> None:
    from sagemaker_containers.profiles import ProfileError, validate_profile

    try:
        profile = config.profile
        validate_profile(profile)
        if profile.is_local:
            raise ConfigError(
                f"model_profile '{config.model_profile}' runs only on the local runtime, not on SageMaker."
            )
        profile.instance_price_per_hour_usd  # noqa: B018  # the finance dashboard needs a price
        for region in config.regions:
            profile.image_uri(region)
    except ProfileError as error:
        raise ConfigError(f"model_profile '{config.model_profile}': {_sentence(error.message)}") from None
    _check_ami(config)
    if config.inference.scale_to_zero and not config.use_inference_components:
        raise ConfigError(
            "inference.scale_to_zero needs inference components (inference.inference_components)."
        )


def _check_ami(config: DeploymentConfig) -> None:
    from cdk.gpu_drivers import INFERENCE_AMI_CUDA, ami_supports, image_cuda

    chosen = config.inference.ami_version
    if chosen is not None and chosen not in INFERENCE_AMI_CUDA:
        raise ConfigError(
            f"inference.ami_version '{chosen}' is not one of {', '.join(sorted(INFERENCE_AMI_CUDA))}."
        )
    cuda = image_cuda(config.profile.image_uri(config.primary_region))
    if chosen is not None and cuda is not None and not ami_supports(chosen, cuda):
        raise ConfigError(
            f"inference.ami_version '{chosen}' has a driver older than the image's CUDA "
            f"{cuda[0]}.{cuda[1]}; leave it empty to pick a matching one."
        )


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    message = str(first["msg"]).rstrip(".")
    if first["type"] == "missing":
        return f"{field} is required."
    if first["type"] == "extra_forbidden":
        return f"{field} is not a known setting."
    return f"{field}: {message}."


def parse_config(data: Mapping[str, Any]) -> DeploymentConfig:
    """Validate a mapping into a DeploymentConfig, or raise ConfigError with one sentence."""
    try:
        config = DeploymentConfig.model_validate(dict(data))
    except ValidationError as error:
        raise ConfigError(_describe(error)) from None
    _check(config)
    return config


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(context: Mapping[str, Any], base_dir: Path) -> DeploymentConfig:
    """The deployment config from the `config` file and `chatstack` overrides in CDK context."""
    path = Path(str(context.get("config") or DEFAULT_CONFIG_FILE))
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file '{path.name}' does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"config file '{path.name}' is a directory, not a file.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path.name}' is not UTF-8 text.") from None
    except OSError as error:
        raise ConfigError(f"config file '{path.name}' cannot be read ({error.strerror}).") from None
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"config file '{path.name}' is not valid JSON ({error.msg} at line {error.lineno})."
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path.name}' must hold a JSON object.")
    overrides = context.get("chatstack") or {}
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError:
            raise ConfigError("the chatstack context value is not a JSON object.") from None
    if not isinstance(overrides, Mapping):
        raise ConfigError("the chatstack context value is not a JSON object.")
    data.pop("$comment", None)
    return parse_config(_merge(data, overrides))
