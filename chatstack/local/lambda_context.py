"""Run Lambda handlers in-process with a context object shaped like the Lambda runtime's.

The local emulators call the very handler functions that AWS Lambda calls, so the handlers get
what they would get in the cloud: an event dict and a context honouring the documented LambdaContext
interface (https://docs.aws.amazon.com/lambda/latest/dg/python-context-object.html). Powertools'
`Logger.inject_lambda_context` reads exactly these attributes.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lambdas.wiring import Function

Handler = Callable[[dict[str, Any], Any], Any]
"""A synchronous Lambda handler: `handler(event, context) -> response`."""

DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "000000000000"


class NotInvoked(RuntimeError):
    """The invocation reached no execution environment (every local Lambda host is down or
    restarting), so no handler ran. Like a throttled invocation in Lambda, the caller may retry: the
    SQS event source mapping retries without spending a receive."""


class LocalLambdaContext:
    """One invocation's context: names and limits of the function, a fresh request id, a deadline."""

    function_version = "$LATEST"
    identity = None
    client_context = None
    tenant_id = None

    def __init__(
        self,
        function: Function,
        *,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        timeout_s: float | None = None,
    ) -> None:
        self.function_name = function.name
        self.memory_limit_in_mb = function.memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function.name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function.name}"
        day = datetime.now(UTC).strftime("%Y/%m/%d")
        self.log_stream_name = f"{day}/[{self.function_version}]{uuid.uuid4().hex}"
        self.timeout_s = function.timeout_s if timeout_s is None else timeout_s
        self._deadline = time.monotonic() + self.timeout_s

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout, counted from the invocation's start."""
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LocalHandler:
    """A handler named "module:attribute" by the wiring, imported on first use."""

    def __init__(
        self, function: Function, *, region: str = DEFAULT_REGION, account_id: str = DEFAULT_ACCOUNT_ID
    ) -> None:
        self.function = function
        self.region = region
        self.account_id = account_id
        self._target: Handler | None = None

    def new_context(self, timeout_s: float | None = None) -> LocalLambdaContext:
        """`timeout_s`: the function's timeout where it is not the wiring's (the Lambda host is told)."""
        return LocalLambdaContext(
            self.function, region=self.region, account_id=self.account_id, timeout_s=timeout_s
        )

    def load(self) -> Handler:
        """Import the handler now (what Lambda's init phase does before the first invocation)."""
        if self._target is None:
            # Imported late so that reading the wiring (or building the app) imports no handler code.
            target = getattr(importlib.import_module(self.function.module), self.function.attribute)
            if not callable(target):
                raise TypeError(f"{self.function.handler} is not callable")
            self._target = target
        return self._target

    def __call__(self, event: dict[str, Any], context: Any = None) -> Any:
        target = self._target if self._target is not None else self.load()
        return target(event, context if context is not None else self.new_context())

    def __repr__(self) -> str:
        return f"LocalHandler({self.function.handler!r})"


def load_handler(
    function: Function, *, region: str = DEFAULT_REGION, account_id: str = DEFAULT_ACCOUNT_ID
) -> LocalHandler:
    """The handler of `function`, imported lazily; each call without a context gets a fresh one."""
    return LocalHandler(function, region=region, account_id=account_id)


def context_for(handler: Handler) -> LocalLambdaContext:
    """A fresh context for one invocation of `handler` (wired functions keep their name and limits)."""
    if isinstance(handler, LocalHandler):
        return handler.new_context()
    name = getattr(handler, "__name__", type(handler).__name__)
    module = getattr(handler, "__module__", "local")
    return LocalLambdaContext(Function(name=name, handler=f"{module}:{name}"))


def invoke(handler: Handler, event: dict[str, Any]) -> Any:
    """Invoke `handler` as the Lambda runtime would: the event and a fresh context."""
    return handler(event, context_for(handler))
