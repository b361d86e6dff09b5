"""Every command that works on a local service finds it through one data dir (`--data-dir` or
`CHATSTACK_DATA_DIR`), and one aimed at a data dir with no running service refuses in one sentence
instead of creating a new data dir. Real `chatstack` processes against a real running service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers.service import Service

pytestmark = pytest.mark.e2e


def chatstack(
    *args: str, data_dir: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    unset = ("CHATSTACK_DATA_DIR", "DATABASE_URL", "CHATSTACK_DATABASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    if data_dir is not None:
        env["CHATSTACK_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "chatstack.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_token_from_the_environment_variable_is_accepted_by_the_running_service(service: Service) -> None:
    made = chatstack("token", "--user", "env-user", "--tenant", "env-tenant", data_dir=service.data_dir)
    assert made.returncode == 0, made.stderr
    reply = httpx.get(service.base + "/v1/conversations",
                      headers={"Authorization": f"Bearer {made.stdout.strip()}"}, timeout=10)
    assert reply.status_code == 200, reply.text


def test_keys_made_through_the_environment_variable_authenticate_and_list_says_no_keys(
    service: Service,
) -> None:
    empty = chatstack("keys", "list", "--tenant", "t-no-keys", data_dir=service.data_dir)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.strip() == "no keys for tenant 't-no-keys'"
    made = chatstack("keys", "create", "--tenant", "t-keys", "--name", "cli", data_dir=service.data_dir)
    assert made.returncode == 0, made.stderr
    reply = httpx.get(service.base + "/v1/conversations", headers={"x-api-key": made.stdout.strip()},
                      timeout=10)
    assert reply.status_code == 200, reply.text
    listed = chatstack("keys", "list", "--tenant", "t-keys", data_dir=service.data_dir)
    assert "active" in listed.stdout and "cli" in listed.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("token", "--user", "u", "--tenant", "t"),
        ("keys", "list", "--tenant", "t"),
        ("ingest", "README.md"),
    ],
    ids=["token", "keys", "ingest"],
)
def test_a_command_aimed_at_a_data_dir_without_a_service_refuses_and_creates_nothing(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    nowhere = tmp_path / "nothing-here"
    done = chatstack(*args, "--data-dir", str(nowhere))
    assert done.returncode != 0
    assert done.stdout == ""
    message = done.stderr.strip()
    assert message.count("\n") == 0 and "No chatstack service is running" in message, message
    assert not nowhere.exists()


def test_a_stale_runtime_file_of_a_dead_service_is_not_taken_for_a_running_one(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    data_dir = tmp_path / "stale"
    data_dir.mkdir()
    state = {"base": "http://127.0.0.1:9", "pid": int(gone.stdout)}
    (data_dir / "runtime.json").write_text(json.dumps(state))
    done = chatstack("token", "--user", "u", "--tenant", "t", data_dir=data_dir)
    assert done.returncode != 0 and "No chatstack service is running" in done.stderr
    assert not (data_dir / "identity").exists()


def test_a_second_up_on_the_same_data_dir_refuses_naming_the_running_one(service: Service) -> None:
    done = chatstack("up", "--port", "0", data_dir=service.data_dir, timeout=60)
    assert done.returncode != 0
    assert f"pid {service.proc.pid}" in done.stderr, done.stderr
    # and the first one is unharmed
    assert httpx.get(service.base + "/healthz", timeout=10).status_code == 200
