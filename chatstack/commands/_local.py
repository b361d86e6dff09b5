"""What every command that works on a local service shares: the data directory option (with its
`CHATSTACK_DATA_DIR` variable) and finding the service running on it.

A command aimed at a data dir with no running service refuses in one sentence instead of creating a
new data dir: a token signed with a fresh key, or documents indexed into a fresh database, would be
refused or invisible to the service the user is actually running.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

DATA_DIR_ENV = "CHATSTACK_DATA_DIR"
DEFAULT_DATA_DIR = ".chatstack"
RUNTIME_FILE = "runtime.json"

data_dir_option = click.option(
    "--data-dir",
    envvar=DATA_DIR_ENV,
    default=DEFAULT_DATA_DIR,
    show_default=True,
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The data directory of `chatstack up` (embedded PostgreSQL, Redis, dev signing key).",
)


@dataclass(frozen=True)
class RunningService:
    """A `chatstack up` whose process is alive and whose /healthz answered."""

    data_dir: Path
    base: str
    pid: int
    state: dict[str, Any]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def find_service(data_dir: Path, timeout_s: float = 5.0) -> RunningService | None:
    """The service running on `data_dir`, or None (no runtime.json, a dead pid, or no /healthz)."""
    import httpx

    try:
        state = json.loads((data_dir / RUNTIME_FILE).read_text())
        base, pid = str(state["base"]), int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _alive(pid):
        return None
    try:
        # Any answer counts: a degraded service (503) is still the one holding this data dir.
        httpx.get(base + "/healthz", timeout=timeout_s)
    except httpx.HTTPError:
        return None
    return RunningService(data_dir=data_dir, base=base, pid=pid, state=state)


def require_service(data_dir: Path) -> RunningService:
    """The running service on `data_dir`, or a one-sentence ClickException saying how to start one."""
    service = find_service(data_dir)
    if service is None:
        raise click.ClickException(
            f"No chatstack service is running on the data dir {data_dir}; start it with "
            f"`chatstack up --data-dir {data_dir}` or point {DATA_DIR_ENV} at the running one's."
        )
    return service


def check_tenant_option(tenant: str, hint: str = "--tenant") -> None:
    """The service's rule for tenant ids (docs/identity.md): what a command writes for another id would
    never be reachable, or would be reachable only by a key the JWT path refuses."""
    from lambdas.validation import TENANT_ID_RULE, valid_tenant_id

    if not valid_tenant_id(tenant):
        raise click.BadParameter(f"{TENANT_ID_RULE}.", param_hint=hint)


def check_user_option(user: str, hint: str = "--user") -> None:
    from lambdas.validation import USER_ID_RULE, valid_user_id

    if not valid_user_id(user):
        raise click.BadParameter(f"{USER_ID_RULE}.", param_hint=hint)
