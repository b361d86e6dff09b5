"""Deployment-wide finance stack (in the primary region): the finance dashboard and the budget."""

from __future__ import annotations

from constructs import Construct

from cdk.config import DeploymentConfig
from cdk.constructs.cost_budget import CostBudget
from cdk.constructs.finance_dashboard import FinanceDashboard
from cdk.stacks.base import ChatstackStack
from cdk.stacks.inference import endpoint_name

DEPLOYMENT_TAG = "chatstack:deployment"


class FinanceStack(ChatstackStack):
    def __init__(self, scope: Construct, *, config: DeploymentConfig) -> None:
        super().__init__(scope, "finance", config=config, region=config.primary_region)
        self.dashboard = FinanceDashboard(
            self,
            "Finance",
            dashboard_name=config.physical_name("finance"),
            regions=config.regions,
            model=config.model_profile,
            endpoint_name=endpoint_name(config),
            price_per_instance_hour_usd=config.profile.instance_price_per_hour_usd,
            monthly_budget_usd=config.monthly_budget_usd,
        ).dashboard
        self.budget = CostBudget(
            self,
            "Budget",
            budget_name=config.physical_name("monthly"),
            monthly_usd=config.monthly_budget_usd,
            tag_key=DEPLOYMENT_TAG,
            tag_value=config.name,
            email=config.alarm_email,
        ).budget
