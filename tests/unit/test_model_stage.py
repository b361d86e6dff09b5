"""`chatstack model stage` copies a model directory to S3 through boto3's transfer manager, checked with
botocore Stubber: ListObjectsV2 and PutObject requests are validated against botocore's S3 model, so
the keys, the bucket and the request shapes are those S3 would get."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from click.testing import CliRunner

from chatstack.commands import model as model_cli

BUCKET = "chatstack-models-123456789012-us-east-1"


def model_dir(root: Path) -> Path:
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (root / "model" / "tokenizer.json").write_text("{}")
    (root / "model" / "model-00001-of-00001.safetensors").write_bytes(b"\0" * 4096)
    (root / "model" / ".cache").mkdir()
    (root / "model" / ".cache" / "lock").write_text("x")  # hub bookkeeping, never staged
    return root / "model"


def s3_stub() -> tuple[Any, Stubber]:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.activate()
    return client, stubber


def expect_put(stubber: Stubber, key: str) -> None:
    stubber.add_response("put_object", {"ETag": '"etag"'}, {"Bucket": BUCKET, "Key": key, "Body": ANY,
                                                            "ChecksumAlgorithm": ANY})  # fmt: skip


def test_stage_sends_every_model_file_once_and_skips_what_is_already_there(tmp_path: Path) -> None:
    source = model_dir(tmp_path)
    files = model_cli.stage_files(source)
    assert sorted(k for _, k in files) == [
        "config.json", "model-00001-of-00001.safetensors", "tokenizer.json"]  # fmt: skip
    client, stubber = s3_stub()
    # GIVEN an interrupted earlier run left tokenizer.json (same size) in the bucket
    stubber.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "llama/tokenizer.json", "Size": 2}], "KeyCount": 1},
        {"Bucket": BUCKET, "Prefix": "llama/"},
    )
    expect_put(stubber, "llama/config.json")
    expect_put(stubber, "llama/model-00001-of-00001.safetensors")
    # WHEN staging THEN only the missing files are sent, under the prefix
    sent, size = model_cli.upload(client, files, BUCKET, "llama/", use_threads=False)
    stubber.assert_no_pending_responses()
    assert sent == 2 and size == 4096 + len('{"architectures": ["LlamaForCausalLM"]}')


def test_the_command_prints_the_uri_to_put_in_the_deployment_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = model_dir(tmp_path)
    client, stubber = s3_stub()
    prefix = {"Bucket": BUCKET, "Prefix": "llama-3.1-8b-instruct/"}
    stubber.add_response("list_objects_v2", {"KeyCount": 0}, prefix)
    for key in ("config.json", "model-00001-of-00001.safetensors", "tokenizer.json"):
        expect_put(stubber, f"llama-3.1-8b-instruct/{key}")
    monkeypatch.setattr(boto3, "client", lambda *a, **k: client)
    real_upload = model_cli.upload
    monkeypatch.setattr(model_cli, "upload", lambda *a, **k: real_upload(*a, **{**k, "use_threads": False}))
    result = CliRunner().invoke(
        model_cli.model, ["stage", "llama-3.1-8b-instruct", "--bucket", BUCKET, "--source", str(source)]
    )
    assert result.exit_code == 0, result.output
    assert f"s3://{BUCKET}/llama-3.1-8b-instruct/: 3 files, 3 sent" in result.stdout
    assert f'"weights_s3_uri": "s3://{BUCKET}/llama-3.1-8b-instruct/"' in result.stdout
    stubber.assert_no_pending_responses()


def test_a_directory_without_weights_is_refused_in_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    result = CliRunner().invoke(
        model_cli.model,
        ["stage", "llama-3.1-8b-instruct", "--bucket", BUCKET, "--source", str(tmp_path / "empty")],
    )
    assert result.exit_code == 2 and "needs config.json and weight files" in result.output


@pytest.mark.parametrize("bucket", ["Bad_Bucket!!", "ab", "a..b", "ends-with-"])
def test_a_bad_bucket_name_is_refused_before_anything_is_read(tmp_path: Path, bucket: str) -> None:
    result = CliRunner().invoke(
        model_cli.model, ["stage", "llama-3.1-8b-instruct", "--bucket", bucket, "--source", str(tmp_path)]
    )
    assert result.exit_code == 2 and "is not an S3 bucket name" in result.output, result.output


def test_without_credentials_staging_fails_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's NoCredentialsError was a traceback."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # boto3's default session keeps the credentials it found first; an earlier test in this process
    # may have set some.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    source = model_dir(tmp_path)
    result = CliRunner().invoke(
        model_cli.model,
        ["stage", "llama-3.1-8b-instruct", "--bucket", BUCKET, "--source", str(source),
         "--region", "us-east-1"],
    )
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("Staging to s3://") and "credentials" in message and "\n" not in message
    assert "Traceback" not in result.output
