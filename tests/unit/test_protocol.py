"""Protocol v1 frames: what clients may send, what the server answers with for bad frames."""

from __future__ import annotations

import json
import uuid

import pytest

from lambdas import protocol
from lambdas.errors import BadRequest, TooLarge

RID = str(uuid.uuid4())


def test_send_message_frame_parses_with_wire_names() -> None:
    frame = protocol.parse_client_frame(
        json.dumps(
            {
                "action": "sendMessage",
                "requestId": RID,
                "text": "hi",
                "options": {"maxTokens": 10, "rag": False},
            }
        )
    )
    assert isinstance(frame, protocol.SendMessage)
    assert str(frame.request_id) == RID and frame.options.max_tokens == 10 and frame.options.rag is False


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "empty"),
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"text": "hi"}', "Unknown action"),
        ('{"action": "dance"}', "Unknown action 'dance'"),
        ('{"action": "sendMessage", "text": "hi"}', "requestId"),
        (json.dumps({"action": "sendMessage", "requestId": "nope", "text": "hi"}), "requestId"),
        (json.dumps({"action": "sendMessage", "requestId": RID, "text": ""}), "text"),
        (json.dumps({"action": "sendMessage", "requestId": RID, "text": "x", "extra": 1}), "extra"),
        (json.dumps({"action": "resume", "requestId": RID, "afterSeq": -1}), "afterSeq"),
        (
            json.dumps({"action": "sendMessage", "requestId": RID, "text": "x", "options": {"maxTokens": 0}}),
            "maxTokens",
        ),
    ],
)
def test_bad_frames_are_refused_with_one_clear_sentence(body: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        protocol.parse_client_frame(body)
    assert fragment in info.value.message
    assert info.value.code == "BAD_REQUEST"


def test_oversized_text_is_too_large() -> None:
    body = json.dumps(
        {"action": "sendMessage", "requestId": RID, "text": "x" * (protocol.MAX_TEXT_CHARS + 1)}
    )
    with pytest.raises(TooLarge) as info:
        protocol.parse_client_frame(body)
    assert info.value.code == "TOO_LARGE"


def test_error_frame_names_the_request_and_omits_unset_fields() -> None:
    wire = json.loads(protocol.dump(protocol.error_frame(BadRequest("nope."), RID)))
    assert wire == {"type": "error", "requestId": RID, "code": "BAD_REQUEST", "message": "nope."}


def test_server_frames_round_trip() -> None:
    done = protocol.Done(
        requestId=RID, messageId="m", finishReason="stop", usage=protocol.Usage(inputTokens=3, outputTokens=4)
    )
    assert protocol.parse_server_frame(protocol.dump(done)) == done
    assert json.loads(protocol.dump(done))["usage"] == {"inputTokens": 3, "outputTokens": 4}


def test_peek_request_id_reads_ids_of_invalid_frames_only_when_sane() -> None:
    assert protocol.peek_request_id(json.dumps({"requestId": RID, "action": "x"})) == RID
    assert protocol.peek_request_id(json.dumps({"requestId": "y" * 500})) is None
    assert protocol.peek_request_id("garbage") is None


def test_a_citation_snippet_is_one_line_cut_at_a_word_within_the_limit() -> None:
    from lambdas.services.generation import _snippet

    text = "First line\n\n" + "word " * 200
    snippet = _snippet(text)
    assert "\n" not in snippet and len(snippet) <= protocol.SNIPPET_CHARS and snippet.endswith("…")
    assert snippet.startswith("First line word word") and not snippet[:-1].endswith(" wor")
    assert _snippet("short  passage") == "short passage"


@pytest.mark.parametrize(
    "spelling",
    [RID.upper(), "{" + RID + "}", RID.replace("-", ""), "urn:uuid:" + RID],
)
@pytest.mark.parametrize("action", ["sendMessage", "resume", "cancel"])
def test_a_request_id_in_another_spelling_is_refused_not_echoed_changed(spelling: str, action: str) -> None:
    """The server's frames carry the canonical form; a client matching them against an uppercase or
    braced id would wait for ever, so such an id is a BAD_REQUEST that says which form to send."""
    frame = {"action": action, "requestId": spelling, "text": "hi", "afterSeq": 0}
    frame = {k: v for k, v in frame.items() if k in {"action", "requestId"} | _FIELDS[action]}
    with pytest.raises(BadRequest, match="lowercase with hyphens"):
        protocol.parse_client_frame(json.dumps(frame))


_FIELDS = {"sendMessage": {"text"}, "resume": {"afterSeq"}, "cancel": set()}


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"maxTokens": "5"}, "maxTokens"),
        ({"maxTokens": 5.0}, "maxTokens"),
        ({"rag": "yes"}, "rag"),
        ({"rag": 1}, "rag"),
        ({"temperature": "0.5"}, "temperature"),
    ],
)
def test_options_are_not_coerced(options: dict[str, object], fragment: str) -> None:
    frame = {"action": "sendMessage", "requestId": RID, "text": "hi", "options": options}
    with pytest.raises(BadRequest, match=fragment):
        protocol.parse_client_frame(json.dumps(frame))


def test_options_of_the_right_types_pass_and_an_integer_temperature_is_a_number() -> None:
    frame = {"action": "sendMessage", "requestId": RID, "text": "hi",
             "options": {"maxTokens": 5, "temperature": 1, "topP": 0.9, "rag": False, "model": "m"}}
    parsed = protocol.parse_client_frame(json.dumps(frame))
    assert isinstance(parsed, protocol.SendMessage) and parsed.options.temperature == 1.0


@pytest.mark.parametrize("text", [" \n\t ", "\u200b", "\u200b\u200d\ufeff \u2060", "\u00a0\u3000", "\u202e"])
def test_text_of_only_whitespace_or_invisible_characters_is_refused(text: str) -> None:
    with pytest.raises(BadRequest, match="visible text"):
        protocol.parse_client_frame(json.dumps({"action": "sendMessage", "requestId": RID, "text": text}))


@pytest.mark.parametrize("text", ["hi", "\u200bhi", "é", "\u4f60", "\U0001f44d"])
def test_text_with_something_visible_passes(text: str) -> None:
    frame = protocol.parse_client_frame(json.dumps({"action": "sendMessage", "requestId": RID, "text": text}))
    assert isinstance(frame, protocol.SendMessage) and frame.text == text


@pytest.mark.parametrize("after", ["3", 3.0, True])
def test_a_resume_position_is_not_coerced(after: object) -> None:
    with pytest.raises(BadRequest, match="afterSeq"):
        protocol.parse_client_frame(json.dumps({"action": "resume", "requestId": RID, "afterSeq": after}))


def test_a_message_by_another_door_has_the_frames_limits_and_errors() -> None:
    """The OpenAI-compatible route builds its sendMessage with `send_message`: 32,001 characters are
    TOO_LARGE (it stored 100,000), a lone surrogate a BAD_REQUEST (it was a 500)."""
    base = {"action": "sendMessage", "requestId": RID}
    with pytest.raises(TooLarge, match="32000"):
        protocol.send_message({**base, "text": "x" * (protocol.MAX_TEXT_CHARS + 1)})
    with pytest.raises(BadRequest, match="text"):
        protocol.send_message({**base, "text": "hi \ud800"})
    assert protocol.send_message({**base, "text": "x" * protocol.MAX_TEXT_CHARS}).text


@pytest.mark.parametrize("stop", [["a", "b", "c", "d", "e"], [""], ["x" * 101], "end", [1]])
def test_stop_sequences_are_four_strings_at_most(stop: object) -> None:
    frame = {"action": "sendMessage", "requestId": RID, "text": "hi", "options": {"stop": stop}}
    with pytest.raises(BadRequest, match="stop"):
        protocol.parse_client_frame(json.dumps(frame))


def test_stop_sequences_pass_as_given() -> None:
    frame = {"action": "sendMessage", "requestId": RID, "text": "hi", "options": {"stop": ["\n\n", "END"]}}
    parsed = protocol.parse_client_frame(json.dumps(frame))
    assert isinstance(parsed, protocol.SendMessage) and parsed.options.stop == ["\n\n", "END"]
