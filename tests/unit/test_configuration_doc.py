"""Every setting is documented, and bad values stop with one sentence naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdas.config import Settings, settings_from_env

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_a_row_in_the_configuration_doc() -> None:
    text = DOC.read_text()
    missing = [name for name in Settings.model_fields if f"`CHATSTACK_{name.upper()}`" not in text]
    assert missing == []


def test_prefixed_and_plain_variables_are_read() -> None:
    s = settings_from_env({"CHATSTACK_FLUSH_INTERVAL_MS": "20", "DATABASE_URL": "postgresql://x/y"})
    assert s.flush_interval_ms == 20 and s.database_url == "postgresql://x/y"


@pytest.mark.parametrize(
    ("env", "name"),
    [({"CHATSTACK_FLUSH_INTERVAL_MS": "-1"}, "CHATSTACK_FLUSH_INTERVAL_MS"),
     ({"CHATSTACK_AUTH_ALGORITHMS": "HS256"}, "CHATSTACK_AUTH_ALGORITHMS"),
     ({"CHATSTACK_MODEL_TRANSPORT": "carrier-pigeon"}, "CHATSTACK_MODEL_TRANSPORT")],
)
def test_a_bad_value_stops_with_one_sentence_naming_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(SystemExit) as info:
        settings_from_env(env)
    assert name in str(info.value) and str(info.value).endswith(".")
