"""The OpenAI-compatible completion in Lambda stops waiting before the function's timeout and answers a
504 that says where the answer will be (lambdas/api/routers/openai.py, `_deadline`).

Contracts checked: the REST function runs behind Mangum on an HTTP API (payload format 2.0, the
Lambda authorizer's context under `requestContext.authorizer.lambda`), and Mangum hands the
invocation's context to the app; an HTTP API integration times out at 30 s ("Amazon API Gateway
quotas", HTTP APIs) and the function at its own timeout (29 s, lambdas/wiring.py), after which API
Gateway answers a bare 503 and the caller learns nothing. Real PostgreSQL and Redis; the queue is an
in-process SendMessage transport whose job no worker takes, so the answer never comes in time.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from chatstack.local.lambda_context import LocalLambdaContext
from lambdas import wiring
from lambdas.adapters.auth import Identity
from lambdas.adapters.queue import JobQueue
from lambdas.config import Settings
from lambdas.runtime import Deps, set_deps
from lambdas.services.models import offered
from lambdas.wiring import Function


class Sent:
    """SQS SendMessage as an in-process transport (the JobQueue's boto3 client)."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, str]:
        self.jobs.append(json.loads(kwargs["MessageBody"]))
        return {"MessageId": str(uuid.uuid4())}


@pytest.fixture
def deps(pg_url: str, redis_url: str) -> Iterator[Deps]:
    settings = Settings(environment="test", database_url=pg_url, redis_url=redis_url, rag_enabled=False,
                        queue_url="http://127.0.0.1:9/q", limits_enabled=False)
    d = Deps(settings)
    d.__dict__["queue"] = JobQueue("http://127.0.0.1:9/q", region="us-east-1", client=Sent())
    set_deps(d)
    try:
        yield d
    finally:
        set_deps(None)
        d.db.close()


def completion_event(body: dict[str, Any], identity: Identity) -> dict[str, Any]:
    path = "/v1/chat/completions"
    return {
        "version": "2.0", "routeKey": "ANY /v1/{proxy+}", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "abc.execute-api.us-east-1.amazonaws.com"},
        "requestContext": {
            "accountId": "123456789012", "apiId": "abc",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9",
                     "userAgent": "openai-python"},
            "requestId": "r1", "routeKey": "ANY /v1/{proxy+}", "stage": "$default",
            "authorizer": {"lambda": identity.to_context()},
        },
        "pathParameters": {"proxy": "chat/completions"},
        "body": json.dumps(body), "isBase64Encoded": False,
    }


@pytest.mark.parametrize("stream", [False, True])
def test_a_completion_longer_than_the_invocation_answers_504_naming_the_stored_conversation(
    deps: Deps, stream: bool
) -> None:
    from lambdas.handlers.rest import handler

    identity = Identity(tenant_id="acme", user_id="u-limit", scopes=frozenset({"chat"}))
    body = {"model": offered(deps.settings)[0].name, "stream": stream,
            "messages": [{"role": "user", "content": "A long question."}]}
    # The function's timeout as the context counts it: 4 s here, so the wait stops 2 s short of it.
    context = LocalLambdaContext(Function(wiring.REST_API.name, wiring.REST_API.handler, 1024, 4))
    # Mangum runs the app on the thread's event loop, which Lambda's runtime has; earlier tests in
    # this process may have closed theirs.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    started = time.monotonic()
    try:
        response = handler(completion_event(body, identity), context)
    finally:
        elapsed = time.monotonic() - started
        asyncio.set_event_loop(None)
        loop.close()
    assert elapsed < 4, elapsed  # answered before Lambda would have cut it off
    (job,) = deps.queue.client.jobs  # the question was accepted: the worker would answer it
    conversation = job["conversationId"]
    if stream:  # the status line went out with the first chunk; the last event says it
        assert response["statusCode"] == 200
        events = [line[6:] for line in response["body"].split("\n") if line.startswith("data: ")]
        (error,) = [json.loads(e)["error"] for e in events if e != "[DONE]" and "error" in json.loads(e)]
    else:
        assert response["statusCode"] == 504
        error = json.loads(response["body"])["error"]
    assert error["code"] == "INTERNAL"
    assert f"GET /v1/conversations/{conversation}/messages" in error["message"], error


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_short_by_a_cancel_is_not_reported_as_a_complete_stop(deps: Deps, stream: bool) -> None:
    """The worker ends a cancelled answer with `done` and finishReason "cancelled" (its conversation
    was deleted mid-answer): an OpenAI client must not read the partial text as a complete answer."""
    import threading

    from lambdas import protocol
    from lambdas.handlers.rest import handler

    identity = Identity(tenant_id="acme", user_id="u-cancel", scopes=frozenset({"chat"}))
    body = {"model": offered(deps.settings)[0].name, "stream": stream,
            "messages": [{"role": "user", "content": "A question deleted mid-answer."}]}
    context = LocalLambdaContext(Function(wiring.REST_API.name, wiring.REST_API.handler, 1024, 20))

    def worker() -> None:  # what the worker publishes for the job, as it does
        while not deps.queue.client.jobs:
            time.sleep(0.01)
        job = deps.queue.client.jobs[0]
        rid = job["requestId"]
        for frame in (protocol.Delta(requestId=rid, seq=1, text="The first half"),
                      protocol.Done(requestId=rid, messageId=job["answerId"], finishReason="cancelled",
                                    usage=protocol.Usage(inputTokens=5, outputTokens=3))):
            deps.cache.publish(rid, protocol.dump(frame), 60)

    publisher = threading.Thread(target=worker, daemon=True)
    publisher.start()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        response = handler(completion_event(body, identity), context)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    publisher.join(5)
    assert response["statusCode"] == 200
    if stream:
        events = [json.loads(line[6:]) for line in response["body"].split("\n")
                  if line.startswith("data: ") and line != "data: [DONE]"]
        finishes = [c["finish_reason"] for e in events for c in e.get("choices", [])
                    if c.get("finish_reason")]
    else:
        finishes = [c["finish_reason"] for c in json.loads(response["body"])["choices"]]
    assert finishes == ["cancelled"]
