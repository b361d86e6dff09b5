"""`chatstack model profiles | render | check`, run through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from chatstack.cli import main
from sagemaker_containers.profiles import get_profile, list_profiles

EXAMPLES = Path(__file__).resolve().parents[2] / "sagemaker_containers" / "profiles" / "examples"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["model", *args])


def assert_one_sentence_failure(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n" not in message and message.endswith(".")
    return message


def test_profiles_lists_every_ready_profile_with_its_cost() -> None:
    result = run("profiles")
    assert result.exit_code == 0
    for profile in list_profiles():
        assert profile.name in result.stdout
    assert "per 1K output tokens" in result.stdout
    assert "2 x ml.g5.2xlarge (1 x NVIDIA A10G), TP 1, bf16" in result.stdout


def test_instances_lists_the_catalog_with_price_confidence() -> None:
    result = run("instances")
    assert result.exit_code == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "$37.69/h" in lines["ml.p4d.24xlarge"] and "[S] 2026-03-15" in lines["ml.p4d.24xlarge"]
    assert "no sourced price" in lines["ml.g6e.xlarge"]
    assert {"ml.g5.xlarge", "ml.g6.xlarge", "ml.g6e.48xlarge", "ml.p5.48xlarge"} <= set(lines)


def test_render_prints_the_environment_as_shell_safe_lines() -> None:
    result = run("render", "llama-3.1-8b-instruct-eagle3")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "OPTION_MAX_ROLLING_BATCH_SIZE=4" in lines
    assert "SERVING_JOB_QUEUE_SIZE=8" in lines
    spec = get_profile("llama-3.1-8b-instruct-eagle3").render_env()["OPTION_SPECULATIVE_CONFIG"]
    assert f"OPTION_SPECULATIVE_CONFIG='{spec}'" in lines
    assert not any(line.startswith(("option.", "engine=")) for line in lines)


def test_render_properties_prints_a_serving_properties_file_only() -> None:
    result = run("render", "llama-3.1-8b-instruct", "--format", "properties")
    assert result.exit_code == 0
    assert result.stdout == get_profile("llama-3.1-8b-instruct").render_properties()
    assert "option.max_rolling_batch_size=8\n" in result.stdout
    assert "OPTION_" not in result.stdout


def test_render_of_an_unknown_profile_is_one_sentence_and_exit_2() -> None:
    message = assert_one_sentence_failure(run("render", "no-such-model"))
    assert message.startswith("Unknown model profile 'no-such-model'; known: ")


def test_render_of_the_local_profile_explains_it_has_no_container() -> None:
    message = assert_one_sentence_failure(run("render", "local-extractive"))
    assert message == (
        "Profile 'local-extractive' runs on the local backend and has no LMI container configuration."
    )


def test_check_accepts_the_json_example_and_reports_the_estimate() -> None:
    result = run("check", str(EXAMPLES / "qwen2.5-7b-instruct.json"))
    assert result.exit_code == 0, result.stderr
    assert "Profile 'qwen2.5-7b-instruct' is valid for ml.g6.xlarge." in result.stdout
    assert "(65536 tokens x 57344 bytes)" in result.stdout


def test_check_accepts_the_yaml_example() -> None:
    result = run("check", str(EXAMPLES / "mistral-7b-instruct.yaml"))
    assert result.exit_code == 0, result.stderr
    assert "cost unknown: The catalog has no sourced price for ml.g6e.xlarge" in result.stdout


def test_check_rejects_a_profile_that_does_not_fit(tmp_path: Path) -> None:
    data = json.loads((EXAMPLES / "qwen2.5-7b-instruct.json").read_text())
    data["max_batch_size"] = 64
    path = tmp_path / "big.json"
    path.write_text(json.dumps(data))
    message = assert_one_sentence_failure(run("check", str(path)))
    assert message.startswith("Profile 'qwen2.5-7b-instruct' does not fit in GPU memory on ml.g6.xlarge:")


def test_check_rejects_a_profile_without_a_batch_size(tmp_path: Path) -> None:
    data = json.loads((EXAMPLES / "qwen2.5-7b-instruct.json").read_text())
    del data["max_batch_size"]
    path = tmp_path / "nobatch.json"
    path.write_text(json.dumps(data))
    message = assert_one_sentence_failure(run("check", str(path)))
    assert message.startswith("max_batch_size must be set explicitly")


def test_check_rejects_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("name = qwen")
    message = assert_one_sentence_failure(run("check", str(path)))
    assert message == "broken.json is not valid JSON: Expecting value at line 1, column 1."


def test_check_rejects_a_missing_file(tmp_path: Path) -> None:
    message = assert_one_sentence_failure(run("check", str(tmp_path / "absent.json")))
    assert message.endswith("absent.json does not exist.")
