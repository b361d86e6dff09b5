"""The capacity and cost planner behind `chatstack plan`: a pure function from the deployment config
and a traffic assumption to a Plan (capacity per region, monthly and idle cost), plus its renderers.

    from chatstack.planning import PlanInputs, make_plan
    plan = make_plan(config, PlanInputs(users=10_000, messages_per_user_per_hour=4))
"""

from chatstack.planning.model import CostLine, Plan, PlanError, PlanInputs, RegionCapacity, WorkerCost
from chatstack.planning.planner import make_plan
from chatstack.planning.report import plan_to_dict, render_table

__all__ = [
    "CostLine",
    "Plan",
    "PlanError",
    "PlanInputs",
    "RegionCapacity",
    "WorkerCost",
    "make_plan",
    "plan_to_dict",
    "render_table",
]
