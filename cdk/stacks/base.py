"""What every chatstack stack shares: a concrete environment (no lookups), no strong cross-region
references, and a description naming the deployment."""

from __future__ import annotations

from typing import Any

from aws_cdk import Environment, Stack
from constructs import Construct

from cdk.config import DeploymentConfig


class ChatstackStack(Stack):
    def __init__(
        self, scope: Construct, kind: str, *, config: DeploymentConfig, region: str, **kwargs: Any
    ) -> None:
        stack_name = f"{config.name}-{region}-{kind}" if region else f"{config.name}-{kind}"
        super().__init__(
            scope,
            stack_name,
            stack_name=stack_name,
            env=Environment(account=config.account, region=region),
            # No strong cross-region references: they lock the producer's values and tie every
            # deploy of a consumer to its producer; cdk/constructs/regional_value.py reads them weakly.
            cross_region_references=False,
            description=f"chatstack '{config.name}': {kind} ({region})",
            **kwargs,
        )
        self.config = config
        self.deployment_region = region

    @property
    def availability_zones(self) -> list[str]:
        """The configured AZs: a concrete environment would otherwise look them up in the account."""
        suffixes = self.config.network.availability_zone_suffixes
        return [self.deployment_region + suffix for suffix in suffixes]
