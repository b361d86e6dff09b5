"""Internal endpoints admit only the run's credentials (issue 11, item 1).

Contract checked: AWS Signature Version 4 ("Authenticating requests: AWS SigV4", AWS General Reference:
the canonical request over the signed headers and the payload hash, an X-Amz-Date within 5 minutes) as
boto3 sends it to SQS's JSON protocol and to the API Gateway management API (`@connections`); a
per-run secret header for our own clients. Real uvicorn servers, real boto3 clients, the real SQS
stand-in and gateway emulator behind the guards.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from chatstack.local.gateway import GatewayEmulator
from chatstack.local.internal_auth import SECRET_HEADER, RunCredentials, SecretGuard, guarded, verify_sigv4
from chatstack.local.sqs import LocalSqs
from lambdas.wiring import Queue

RUN = RunCredentials.generate()
QUEUE = Queue(name="jobs-sec.fifo", dead_letter_name="jobs-sec-dlq.fifo", max_receive_count=2,
              visibility_timeout_s=60, batch_size=10, max_concurrency=1)
NO_RETRY = Config(retries={"max_attempts": 1})


def client(service: str, url: str, key: str = RUN.access_key_id, secret: str = RUN.secret_access_key) -> Any:
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=NO_RETRY)


@pytest.fixture
async def guarded_sqs(serve_routes: Any) -> LocalSqs:
    holder: list[LocalSqs] = []

    def build(base_url: str) -> list[Any]:
        holder.append(LocalSqs(queue=QUEUE, worker=lambda e, c: None, base_url=f"{base_url}/sqs"))
        return [Mount("/", app=guarded(Starlette(routes=holder[0].routes), RUN))]

    await serve_routes(build)
    return holder[0]


def send(sqs: Any, url: str, body: str = "job") -> Any:
    return sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g", MessageDeduplicationId=body)


async def test_boto3_with_the_run_credentials_reaches_the_queue(guarded_sqs: LocalSqs) -> None:
    sqs = await asyncio.to_thread(client, "sqs", guarded_sqs.endpoint_url)
    sent = await asyncio.to_thread(send, sqs, guarded_sqs.queue_url)
    assert sent["MessageId"]


async def test_another_secret_key_or_key_id_is_refused_by_the_queue(guarded_sqs: LocalSqs) -> None:
    for key, secret in [(RUN.access_key_id, "not-the-secret"), ("AKIAOTHER", RUN.secret_access_key)]:
        sqs = await asyncio.to_thread(client, "sqs", guarded_sqs.endpoint_url, key, secret)
        with pytest.raises(ClientError) as caught:
            await asyncio.to_thread(send, sqs, guarded_sqs.queue_url)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_an_unsigned_forged_job_is_refused(guarded_sqs: LocalSqs) -> None:
    # The attack of issue 11: a client posts a job straight to the queue endpoint, with no credentials.
    async with httpx.AsyncClient() as http:
        job = {"QueueUrl": guarded_sqs.queue_url, "MessageBody": "{}", "MessageGroupId": "g"}
        headers = {"X-Amz-Target": "AmazonSQS.SendMessage", "Content-Type": "application/x-amz-json-1.0"}
        r = await http.post(guarded_sqs.endpoint_url, headers=headers, json=job)
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"


def test_a_signature_does_not_cover_another_body_or_a_stale_time() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="POST", url="http://127.0.0.1:9/sqs", data=b'{"a":1}',
                         headers={"Host": "127.0.0.1:9", "X-Amz-Target": "AmazonSQS.SendMessage"})
    SigV4Auth(Credentials(RUN.access_key_id, RUN.secret_access_key), "sqs", "us-east-1").add_auth(request)
    headers = [(k, str(v)) for k, v in request.headers.items()]
    args: dict[str, Any] = {"method": "POST", "raw_path": "/sqs", "query": "", "headers": headers,
                            "access_key_id": RUN.access_key_id, "secret_access_key": RUN.secret_access_key}
    verify_sigv4(body=b'{"a":1}', **args)  # the signed request passes
    from chatstack.local.internal_auth import Refusal

    with pytest.raises(Refusal, match="does not match"):
        verify_sigv4(body=b'{"a":2}', **args)
    with pytest.raises(Refusal, match="expired"):
        verify_sigv4(body=b'{"a":1}', now=time.time() + 301, **args)


async def test_connections_api_admits_the_run_credentials_only(serve_routes: Any) -> None:
    gateway = GatewayEmulator(routes={}, authorizer=None)
    base = await serve_routes(lambda _: [Mount("/", app=guarded(Starlette(routes=gateway.routes), RUN))])
    good, bad = (await asyncio.to_thread(client, "apigatewaymanagementapi", base),
                 await asyncio.to_thread(client, "apigatewaymanagementapi", base, RUN.access_key_id, "x"))
    with pytest.raises(ClientError) as gone:  # authenticated: the (unknown) connection is gone
        await asyncio.to_thread(good.post_to_connection, ConnectionId="abc=", Data=b"hi")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 410
    with pytest.raises(ClientError) as refused:
        await asyncio.to_thread(bad.post_to_connection, ConnectionId="abc=", Data=b"hi")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


async def test_the_secret_header_guard_admits_only_the_run_secret(serve_routes: Any) -> None:
    async def hello(_: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = SecretGuard(Starlette(routes=[Route("/invocations", hello, methods=["POST"])]), secret=RUN.secret)
    base = await serve_routes(lambda _: [Mount("/", app=app)])
    async with httpx.AsyncClient() as http:
        assert (await http.post(base + "/invocations")).status_code == 403
        assert (await http.post(base + "/invocations", headers={SECRET_HEADER: "guess"})).status_code == 403
        ok = await http.post(base + "/invocations", headers={SECRET_HEADER: RUN.secret})
    assert ok.status_code == 200 and ok.text == "hello"


def test_the_model_server_answers_only_the_run_and_the_worker_client_proves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model client (HttpTransport) sends the run's secret; anyone else on the machine gets 403."""
    from lambdas.adapters.model import HttpTransport
    from sagemaker_containers.server import ThreadedServer
    from sagemaker_containers.server.app import create_app
    from sagemaker_containers.server.backends import load_backend

    monkeypatch.setenv("CHATSTACK_INTERNAL_SECRET", RUN.secret)
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "stream": True}
    with ThreadedServer(create_app(load_backend("extractive"))) as running:
        url = running.url + "/invocations"
        assert httpx.get(running.url + "/ping").status_code == 200  # health stays open
        stranger = httpx.post(url, json=body)
        assert stranger.status_code == 403
        chunks = list(HttpTransport(url, 10, secret=RUN.secret).stream(body))
        assert chunks and b"chat.completion.chunk" in b"".join(chunks)
        with pytest.raises(Exception, match="rejected"):
            list(HttpTransport(url, 10, secret="guess").stream(body))


# ---- the canonical request, against botocore's signer ------------------------------------------

_path_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
_header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(
    segments=st.lists(_path_text, min_size=1, max_size=3),
    query=st.dictionaries(st.text("abcxyz-_~. ", min_size=1, max_size=5), st.text(max_size=8), max_size=3),
    extra=st.dictionaries(st.sampled_from(["x-amz-target", "content-type", "x-custom"]), _header_value,
                          max_size=3),
    body=st.binary(max_size=200),
    service=st.sampled_from(["sqs", "execute-api"]),
)
def test_what_botocore_signs_verifies_and_any_change_does_not(
    segments: list[str], query: dict[str, str], extra: dict[str, str], body: bytes, service: str
) -> None:
    """Property: for any path (percent-encoded by the client, as boto3 encodes a ConnectionId), query,
    header values with odd spacing and body, a request signed by botocore's SigV4Auth passes
    verify_sigv4, and the same request with another body or another path does not."""
    from urllib.parse import quote, urlencode

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from chatstack.local.internal_auth import Refusal

    raw_path = "/" + "/".join(quote(s, safe="") for s in segments)
    query_string = urlencode(query)
    url = f"http://127.0.0.1:9{raw_path}" + (f"?{query_string}" if query_string else "")
    request = AWSRequest(method="POST", url=url, data=body, headers={"Host": "127.0.0.1:9", **extra})
    SigV4Auth(Credentials(RUN.access_key_id, RUN.secret_access_key), service, "us-east-1").add_auth(request)
    headers = [(k, str(v)) for k, v in request.headers.items()]
    args: dict[str, Any] = {"method": "POST", "query": query_string, "headers": headers,
                            "access_key_id": RUN.access_key_id, "secret_access_key": RUN.secret_access_key}
    verify_sigv4(raw_path=raw_path, body=body, **args)
    with pytest.raises(Refusal):
        verify_sigv4(raw_path=raw_path, body=body + b"!", **args)
    with pytest.raises(Refusal):
        verify_sigv4(raw_path=raw_path + "x", body=body, **args)


def test_a_declared_payload_hash_must_match_the_body() -> None:
    """AWS checks x-amz-content-sha256 against the body; a captured signature must not carry another."""
    import hashlib

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from chatstack.local.internal_auth import Refusal

    declared = hashlib.sha256(b"original").hexdigest()
    request = AWSRequest(method="POST", url="http://127.0.0.1:9/", data=b"original",
                         headers={"Host": "127.0.0.1:9", "X-Amz-Content-SHA256": declared})
    SigV4Auth(Credentials(RUN.access_key_id, RUN.secret_access_key), "sqs", "us-east-1").add_auth(request)
    headers = [(k, str(v)) for k, v in request.headers.items()]
    args: dict[str, Any] = {"method": "POST", "raw_path": "/", "query": "", "headers": headers,
                            "access_key_id": RUN.access_key_id, "secret_access_key": RUN.secret_access_key}
    verify_sigv4(body=b"original", **args)
    with pytest.raises(Refusal, match="does not match the body"):
        verify_sigv4(body=b"forged", **args)
