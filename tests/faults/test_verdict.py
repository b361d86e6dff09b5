"""The fault suite's verdict (chatstack.chaos.FaultResult): the instrument must fail a run that broke a
promise, and only such a run. Recorded outcomes in, sentences out; no service needed."""

from __future__ import annotations

import pytest

from chatstack.chaos import FAULTS, Chat, FaultResult, table

LOST = "1 of 1 requestIds reached no stored answer by resume or re-send."


def chat(index: int, outcome: str = "done", answered_by: str = "stream", **fields: object) -> Chat:
    c = Chat(index, f"u{index}", f"r{index}", outcome=outcome, answered_by=answered_by)
    c.stored_users, c.stored_answers, c.stored_text = 1, 1, "the answer"
    c.conversations = {f"c{index}"}
    for key, value in fields.items():
        setattr(c, key, value)
    return c


def result(fault: str, chats: list[Chat], heal_s: float | None = 2.0) -> FaultResult:
    return FaultResult(FAULTS[fault], chats, len(chats), ["x"], 1.0, heal_s)


def test_a_survived_fault_has_no_problems_and_passes() -> None:
    r = result("model-server", [chat(0), chat(1, "error", "resend", codes=["MODEL_UNAVAILABLE"])])
    assert (r.answered, r.failed, r.lost) == (2, 0, 0)
    assert r.problems() == []
    assert r.row()[-1] == "pass"


@pytest.mark.parametrize(
    ("chats", "heal_s", "expected"),
    [
        ([chat(0, "hung", "resume")], 2.0, "1 of 1 chats got neither done nor error within 30 s."),
        ([chat(0, "closed", "resume")], 2.0, "1 of 1 connections closed without a done or error frame."),
        ([chat(0, "error", "")], 2.0, LOST),
        ([chat(0, stored_answers=0)], 2.0, LOST),
        ([chat(0, stored_answers=2)], 2.0, "1 of 1 requestIds were stored twice."),
        ([chat(0, conversations={"a", "b"})], 2.0, "1 of 1 requestIds were stored twice."),
        ([chat(0, streamed=["the answ"])], 2.0, "1 of 1 streamed answers differ from the stored answer."),
        ([chat(0)], None, "No new chat succeeded within 30 s of the fault."),
        ([chat(0)], 31.0, "No new chat succeeded within 30 s of the fault."),
        (
            [chat(0, "error", "", final_error="error INTERNAL: failed")],
            2.0,
            "1 of 1 requestIds were given up with an error instead of answered.",
        ),
    ],
)
def test_a_broken_promise_is_named_and_fails_the_fault(
    chats: list[Chat], heal_s: float | None, expected: str
) -> None:
    r = result("redis", chats, heal_s)
    assert expected in r.problems()
    assert r.row()[-1] == "FAIL"


def test_errors_fail_only_faults_where_nothing_really_failed() -> None:
    errored = [chat(0, "error", "resume", codes=["BAD_REQUEST"])]
    assert result("duplicate-send", errored).problems() == ["1 of 1 chats ended in error (BAD_REQUEST)."]
    assert result("lambda-host", errored).problems() == []


def test_a_final_error_is_counted_apart_from_silence_and_still_fails() -> None:
    given_up = result(
        "model-server", [chat(0, "error", "", final_error="error INTERNAL: This answer failed.")]
    )
    assert (given_up.answered, given_up.failed, given_up.lost) == (0, 1, 0)
    assert given_up.problems() == ["1 of 1 requestIds were given up with an error instead of answered."]


def test_a_closed_connection_is_an_end_only_when_the_gateway_died() -> None:
    closed = [chat(0, "closed", "resend")]
    assert result("whole-service", closed).problems() == []
    assert result("postgres", closed).problems() != []


def test_the_table_has_one_row_per_fault_with_hangs_shown_past_the_limit() -> None:
    hung = FaultResult(FAULTS["redis"], [chat(0, "hung", "")], 1, ["redis (pid 1)"], None, None)
    lines = table([hung, result("postgres", [chat(0)])]).splitlines()
    assert lines[0].startswith("| fault | chats | mid-stream | done | error | closed | hung | answered |")
    assert lines[2] == "| redis | 1 | 1 | 0 | 0 | 0 | 1 | 0 | 0 | 1 | 0 | >30 | >40 | FAIL |"
    assert lines[3] == "| postgres | 1 | 1 | 1 | 0 | 0 | 0 | 1 | 0 | 0 | 0 | 1.0 | 2.0 | pass |"


def test_a_new_send_left_without_ack_or_error_fails_the_fault() -> None:
    r = FaultResult(FAULTS["postgres"], [chat(0)], 1, ["postgres (pid 1)"], 1.0, 2.0, silent_sends=2)
    assert r.problems() == ["2 new sendMessages got neither ack nor error within 10 s."]


def test_a_streamed_answer_that_differs_is_shown_where_it_parts() -> None:
    seqs = [[1, 2, 3, 2, 3, 4, -5, 6]]
    r = result("lambda-host", [chat(0, streamed=["the answer the answer"], seqs=seqs)])
    assert r.details()[-1] == (
        "  chat 0 r0: streamed 21 characters, stored 10; they part at 10: "
        "streamed 'the answer the answer', stored 'the answer'; seqs as they arrived (-n: restart): "
        "1-3 2-4 -5 6"
    )
