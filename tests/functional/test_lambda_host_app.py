"""The Lambda host's invoke endpoint answers as the Lambda Invoke API does (Lambda API reference,
"Invoke"): `POST /2015-03-31/functions/{name}/invocations` runs the function with the JSON body as its
event and answers 200 with its result; a function that raises answers 200 with
`X-Amz-Function-Error: Unhandled` and `{"errorType", "errorMessage"}`; an unknown function answers 404
(ResourceNotFoundException, `"Type": "User"`); a body that is not JSON answers 400
(InvalidRequestContentException). Real uvicorn, the Cognito pre-token trigger as the function (pure:
no database or cache behind it), the HostPool's RemoteFunction as the caller."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Mount

from chatstack.local.lambda_host import (
    INVOKE_PATH,
    FunctionError,
    HostPool,
    create_host_app,
    remote_functions,
)

EVENT: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "fixtures/events/cognito_pre_token_generation_v2.json").read_text()
)


@pytest.fixture
async def host(serve_routes: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("CHATSTACK_INTERNAL_SECRET", raising=False)
    # In this test process a timed-out invocation must not end the process (the host's default).
    app = create_host_app(on_timeout=lambda: None)
    return str(await serve_routes(lambda _: [Mount("/", app=app)]))


async def test_an_invocation_answers_the_result_or_the_function_error(host: str) -> None:
    pre_token = remote_functions([host])["pre_token"]
    result = await asyncio.to_thread(pre_token, EVENT)
    claims = result["response"]["claimsAndScopeOverrideDetails"]["idTokenGeneration"]["claimsToAddOrOverride"]
    assert claims["tenant"] == "acme"
    no_tenant = copy.deepcopy(EVENT)
    no_tenant["request"]["userAttributes"].pop("custom:tenant")
    with pytest.raises(FunctionError) as raised:
        await asyncio.to_thread(pre_token, no_tenant)
    assert raised.value.error_type == "PreTokenError" and "tenant" in str(raised.value)


async def test_an_unknown_function_and_a_body_that_is_not_json_are_refused(host: str) -> None:
    origin = HostPool([host]).origins[0]
    unknown = await asyncio.to_thread(origin.request, "POST", INVOKE_PATH.format(name="nope"), b"{}")
    assert unknown.status == 404
    assert json.loads(unknown.data) == {"Type": "User", "message": "Function not found: nope"}
    garbled = await asyncio.to_thread(
        origin.request, "POST", INVOKE_PATH.format(name="pre_token"), b"{not json"
    )
    assert garbled.status == 400 and "json" in json.loads(garbled.data)["message"]


def test_the_host_imports_every_handler_before_its_first_invocation() -> None:
    """Lambda's init phase imports a function's handler before the first invocation; the host's app does
    the same, so a burst does not pay each handler's import (about 0.1 s of CPU) in its first requests.
    A fresh interpreter, since this test process has imported the handlers already."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from chatstack.local.lambda_host import create_host_app\n"
        "from lambdas import wiring\n"
        "modules = [f.module for f in wiring.FUNCTIONS]\n"
        "before = [m for m in modules if m in sys.modules]\n"
        "create_host_app()\n"
        "print(len(before), sum(m in sys.modules for m in modules), len(modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    before, after, total = map(int, out.stdout.split())
    assert before == 0 and after == total > 0
