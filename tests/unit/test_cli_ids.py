"""The commands that mint or write for a tenant hold its id to the service's rule (docs/identity.md):
`token` printed tokens the service then refused (401), `ingest` indexed into "ACME", which no caller
can reach. One sentence and exit 2, before any data directory or database is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from chatstack.commands.ingest import ingest
from chatstack.commands.token import token


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--user", "u", "--tenant", "ACME"], "lower-case"),
        (["--user", "u", "--tenant", "t t"], "lower-case"),
        (["--user", " u", "--tenant", "t"], "no blanks at either end"),
        (["--user", "u", "--tenant", "t", "--scope", "bogus"], "'bogus' is not one of"),
    ],
)
def test_token_refuses_what_the_service_refuses(args: list[str], fragment: str, tmp_path: Path) -> None:
    done = CliRunner().invoke(token, [*args, "--data-dir", str(tmp_path)])
    assert done.exit_code == 2 and fragment in done.output, done.output


def test_ingest_refuses_a_tenant_id_the_service_refuses(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("text")
    args = [str(tmp_path / "a.md"), "--tenant", "ACME", "--data-dir", str(tmp_path)]
    done = CliRunner().invoke(ingest, args)
    assert done.exit_code == 2 and "lower-case" in done.output, done.output
