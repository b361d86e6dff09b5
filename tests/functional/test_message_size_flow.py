"""A message must fit the model's context with room for its answer. Real PostgreSQL and Redis, the
in-process @connections and SQS transports of test_recovery.

- sendMessage refuses one that cannot fit (TOO_LARGE) before anything is stored, so the client hears
  at once and may resend the same requestId shorter or with fewer maxTokens;
- a job already queued that no longer fits (the model's limit lowered since) ends as TOO_LARGE,
  stored as a failed answer, not redelivered until it lands as INTERNAL;
- retrieved passages take what a long message leaves, so a message that fits is answered.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from lambdas import protocol
from lambdas.adapters.auth import Identity
from lambdas.errors import TooLarge
from lambdas.rag.retriever import Passage
from lambdas.services.chat import ChatService
from lambdas.services.generation import GenerationService, Job
from tests.functional.test_recovery import Model, answers, make_deps, posts, sent

# About 1,150 tokens by the estimate (1.15 per word), 1,185 with the instructions: under 32,000
# characters, over a 1,400-token model's input once 512 are kept for the answer, within it when only
# 50 are.
LONG = "word " * 1000


def _identity() -> Identity:
    return Identity(tenant_id=f"t-{uuid.uuid4().hex[:8]}", user_id="u", scopes=frozenset({"chat"}))


def _message(text: str, **options: Any) -> protocol.SendMessage:
    return protocol.SendMessage(action="sendMessage", requestId=uuid.uuid4(), text=text, options=options)


def test_a_message_with_no_room_for_its_answer_is_refused_before_it_is_stored(
    pg_url: str, redis_url: str
) -> None:
    d = make_deps(pg_url, redis_url, Model(), model_max_context_tokens=1400, max_output_tokens=512)
    msg = _message(LONG)
    with pytest.raises(TooLarge, match="fewer maxTokens"):
        ChatService(d).accept(_identity(), msg, "c1")
    with d.db.transaction() as conn:
        row = conn.execute("SELECT 1 FROM messages WHERE request_id = %s", (msg.request_id,)).fetchone()
    assert row is None
    assert d.cache.request(str(msg.request_id)) is None and sent(d).jobs == []

    # The same requestId, asking for a shorter answer, now fits and is accepted.
    retry = protocol.SendMessage(
        action="sendMessage", requestId=msg.request_id, text=LONG, options={"maxTokens": 50}
    )
    assert isinstance(ChatService(d).accept(_identity(), retry, "c1"), protocol.Ack)
    assert len(sent(d).jobs) == 1


def test_a_queued_job_that_no_longer_fits_ends_as_too_large_not_as_a_retry(
    pg_url: str, redis_url: str
) -> None:
    roomy = make_deps(pg_url, redis_url, Model(), model_max_context_tokens=8192)
    ChatService(roomy).accept(_identity(), _message(LONG), "c1")
    job = Job.parse(sent(roomy).jobs[-1]["job"])

    # The deployment's model limit is lowered while the job waits in the queue.
    model = Model()
    tight = make_deps(pg_url, redis_url, model, model_max_context_tokens=1400, max_output_tokens=512)
    GenerationService(tight).run(job)  # returns: a raise would have the queue deliver it again

    frames = posts(tight).of("c1")
    assert [f.type for f in frames] == ["error"]
    error = frames[0]
    assert isinstance(error, protocol.Error)
    assert error.code == "TOO_LARGE" and error.request_id == job.request_id
    assert [a["finish_reason"] for a in answers(tight, job.request_id)] == ["error"]
    assert model.calls == 0


class Passages:
    """A retriever whose search always finds the same passages (the fitting rule is under test, not
    the search: tests/functional/test_rag_flow.py covers that against pgvector)."""

    def __init__(self, texts: list[str]) -> None:
        self.passages = [
            Passage(document_id=f"d{i}", title=f"T{i}", chunk=0, text=t, score=0.9, source=f"s{i}")
            for i, t in enumerate(texts)
        ]

    def retrieve(self, **_: Any) -> list[Passage]:
        return self.passages


def test_retrieved_passages_take_only_what_a_long_message_leaves(pg_url: str, redis_url: str) -> None:
    model = Model()
    d = make_deps(
        pg_url, redis_url, model,
        model_max_context_tokens=1700, max_output_tokens=100, rag_context_tokens=1200, rag_top_k=4,
    )
    d.__dict__["retriever"] = Passages(["short passage about leases"] + ["filler " * 400] * 3)
    ChatService(d).accept(_identity(), _message(LONG), "c1")
    job = Job.parse(sent(d).jobs[-1]["job"])
    GenerationService(d).run(job)

    done = posts(d).of("c1")[-1]
    assert isinstance(done, protocol.Done) and done.finish_reason == "stop"
    # 1,600 tokens of input: the message and instructions take 1,185, so the short passage fits and
    # the 460-token ones do not (the context budget alone, 1,200, would have let two of them in).
    assert [c.document_id for c in done.citations] == ["d0"]


class Recording(Model):
    """The fake LMI endpoint, keeping each request's messages."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[list[dict[str, str]]] = []

    def stream(self, body: dict[str, Any]) -> Any:
        self.prompts.append(body["messages"])
        return super().stream(body)


def test_a_job_carries_no_text_so_the_longest_message_fits_sqs(pg_url: str, redis_url: str) -> None:
    """SQS refuses a body over the queue's MaximumMessageSize, 262,144 bytes unless set higher
    (SetQueueAttributes, SQS API Reference; the local stand-in keeps that default). The job's JSON
    escaped a character outside the BMP as 12 bytes, so 22,000 emoji (an 88 KB frame) were refused
    and the client got INTERNAL. Jobs now carry ids only."""
    model = Recording()
    d = make_deps(pg_url, redis_url, model, model_max_context_tokens=65_536)
    text = "\U0001f600" * protocol.MAX_TEXT_CHARS
    ChatService(d).accept(_identity(), _message(text), "c1")
    body = sent(d).jobs[-1]["MessageBody"]
    assert "text" not in json.loads(body) and len(body.encode()) < 1024

    GenerationService(d).run(Job.parse(json.loads(body)))
    assert model.prompts[-1][-1] == {"role": "user", "content": text}  # from PostgreSQL
    assert isinstance(posts(d).of("c1")[-1], protocol.Done)
