"""An AWS Budget on this deployment's cost-allocation tag, with actual and forecast notifications."""

from __future__ import annotations

from aws_cdk import aws_budgets as budgets
from constructs import Construct


class CostBudget(Construct):
    """Monthly cost budget for resources tagged `chatstack:deployment=<name>`."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        budget_name: str,
        monthly_usd: float,
        tag_key: str,
        tag_value: str,
        email: str,
    ) -> None:
        super().__init__(scope, id)
        subscriber = budgets.CfnBudget.SubscriberProperty(subscription_type="EMAIL", address=email)

        def notify(kind: str, threshold: float) -> budgets.CfnBudget.NotificationWithSubscribersProperty:
            return budgets.CfnBudget.NotificationWithSubscribersProperty(
                notification=budgets.CfnBudget.NotificationProperty(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=threshold,
                    threshold_type="PERCENTAGE",
                ),
                subscribers=[subscriber],
            )

        self.budget = budgets.CfnBudget(
            self,
            "Budget",
            budget=budgets.CfnBudget.BudgetDataProperty(
                budget_name=budget_name,
                budget_type="COST",
                time_unit="MONTHLY",
                budget_limit=budgets.CfnBudget.SpendProperty(amount=monthly_usd, unit="USD"),
                cost_filters={"TagKeyValue": [f"user:{tag_key}${tag_value}"]},
            ),
            notifications_with_subscribers=[
                notify("ACTUAL", 50),
                notify("ACTUAL", 80),
                notify("ACTUAL", 100),
                notify("FORECASTED", 100),
            ],
        )
