"""A real Lambda host process (chatstack.local.lambda_host's app and server) with two test functions
beside the wiring's: `hang` sleeps for `sleepS` and then writes `write` (a file), as a handler stuck
on a dependency that wakes up later and acts; `echo` answers its event. Without the cold start (no
PostgreSQL or Redis behind it): what is under test is how the host runs an invocation, not a handler.

    python -m tests.helpers.hanging_host
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lambdas import wiring

HANG = wiring.Function("hang", "tests.helpers.hanging_host:hang", 128, 30)
ECHO = wiring.Function("echo", "tests.helpers.hanging_host:echo", 128, 30)


def hang(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(float(event["sleepS"]))
    Path(event["write"]).write_text("written after waking")
    return {"woke": True}


def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {"echo": event, "remainingMs": context.get_remaining_time_in_millis()}


def main() -> None:
    wiring.FUNCTIONS = (*wiring.FUNCTIONS, HANG, ECHO)  # type: ignore[misc]
    from chatstack.local.lambda_host import create_host_app, serve

    serve(create_host_app())


if __name__ == "__main__":
    main()
