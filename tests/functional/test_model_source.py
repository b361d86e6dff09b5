"""`chatstack up --model ...`: where the model comes from. `hf:ORG/NAME` resolves through
huggingface_hub's cache (its documented layout: `models--ORG--NAME/refs/main` naming a snapshot under
`snapshots/<commit>/`), so a model fetched once starts again without a network; with no cached copy
and no network the command says so in one sentence. Tiny models are built here; nothing is downloaded
(HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.tiny_model import create_tiny_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_with(cache: Path, repo_id: str) -> Path:
    """An HF hub cache holding `repo_id` at COMMIT; returns the snapshot dir to fill."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    return snapshot


def choose(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = ("import json, sys, click\n"
            "from chatstack.commands._models import choose_model\n"
            "try:\n"
            "    c = choose_model(sys.argv[1], sys.argv[2] or None, sys.argv[3])\n"
            "except click.ClickException as e:\n"
            "    sys.exit(e.format_message())\n"
            "print(json.dumps([c.backend, c.args]))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_cached_hub_model_is_served_from_the_cache_without_network(tmp_path: Path) -> None:
    snapshot = cache_with(tmp_path / "hub", "test-org/tiny-chat")
    create_tiny_model(snapshot)
    done = choose(tmp_path / "hub", "hf:test-org/tiny-chat", "", "")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["transformers", ["--model-dir", str(snapshot)]]


def test_a_cached_gguf_file_is_served_by_llama_cpp(tmp_path: Path) -> None:
    snapshot = cache_with(tmp_path / "hub", "test-org/tiny-gguf")
    (snapshot / "tiny-q8_0.gguf").write_bytes(b"GGUF")
    done = choose(tmp_path / "hub", "hf:test-org/tiny-gguf", "llamacpp", "tiny-q8_0.gguf")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["llamacpp", ["--model-file", str(snapshot / "tiny-q8_0.gguf")]]


@pytest.mark.parametrize(
    "args", [("hf:test-org/absent", "", ""), ("hf:test-org/absent", "llamacpp", "x.gguf")],
    ids=["dir", "gguf"],
)
def test_a_model_neither_cached_nor_downloadable_is_one_sentence(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    (tmp_path / "hub").mkdir()
    done = choose(tmp_path / "hub", *args)
    assert done.returncode != 0
    message = done.stderr.strip()
    assert message.count("\n") == 0, message
    assert "test-org/absent" in message and "Hugging Face" in message


def test_a_bad_model_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    done = choose(tmp_path / "hub", "hf:no-slash", "", "")
    assert done.returncode != 0 and "hf:ORG/NAME" in done.stderr
