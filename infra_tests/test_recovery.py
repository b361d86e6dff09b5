"""Recovery of requests whose worker died, as deployed (lambdas/services/recovery.py).

SQS makes a failed message visible again only after its visibility timeout (six times the worker's
timeout, per "Configuring a queue to use with Lambda", docs.aws.amazon.com/lambda/latest/dg/
with-sqs.html), so the cloud relies on the sweeper on an EventBridge schedule and on resume: both
enqueue again and need sqs:SendMessage on the jobs queue.
"""

from __future__ import annotations

from infra_tests.conftest import Synth
from infra_tests.helpers import referenced_ids, statements
from lambdas import wiring


def test_the_sweeper_runs_on_a_schedule_in_every_region(synth: Synth) -> None:
    for region in synth.config.regions:
        template = synth.stack(region, "api")
        rules = synth.resources(template, "AWS::Events::Rule")
        scheduled = [
            r for r in rules.values()
            if r["Properties"].get("ScheduleExpression") == f"rate({wiring.SWEEP_INTERVAL_S // 60} minute)"
        ]
        assert scheduled, f"no sweeper schedule in {region}"
        targets = scheduled[0]["Properties"]["Targets"]
        functions = synth.resources(template, "AWS::Lambda::Function")
        sweeper = [i for i in functions if i.startswith("FunctionsSweeper")]
        assert sweeper and sweeper[0] in referenced_ids(targets)


def test_resume_and_the_sweeper_may_enqueue_jobs_again(synth: Synth) -> None:
    for region in synth.config.regions:
        template = synth.stack(region, "api")
        senders = set()
        for policy in synth.resources(template, "AWS::IAM::Policy").values():
            for statement in statements(policy):
                actions = statement["Action"]
                actions = actions if isinstance(actions, list) else [actions]
                if "sqs:SendMessage" in actions:
                    senders |= referenced_ids(policy["Properties"].get("Roles", []))
        roles = set(synth.resources(template, "AWS::IAM::Role"))
        for name in ("SendMessage", "Resume", "Sweeper"):
            assert any(r.startswith(f"Functions{name}") and r in senders for r in roles), (name, region)
