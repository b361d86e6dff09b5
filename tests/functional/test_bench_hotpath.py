"""`chatstack bench hotpath` runs every case against its real servers (an embedded Redis and
PostgreSQL, forked loopback servers) and reports both variants of each; its figures are benchmarks,
so only their presence and sense are checked here, never their size."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from chatstack.bench.hotpath import hotpath


def test_every_case_reports_both_variants(tmp_path: Path) -> None:
    out = tmp_path / "hotpath.json"
    result = CliRunner().invoke(hotpath, ["--quick", "--rounds", "1", "--threads", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    variants = {
        "reads": ["python timeout", "kernel timeout"],
        "redis": ["python timeout", "kernel timeout", "kernel timeout, owner-checked"],
        "postgres": ["transaction, checked by a query", "read, checked by a poll"],
        "http": ["urllib3", "http1"],
        "handoff": ["anyio to_thread", "own threads"],
    }
    for case, names in variants.items():
        assert list(figures[case]["us_per_op"]) == names
        assert all(value > 0 for value in figures[case]["us_per_op"].values())
        assert figures[case]["after_over_before"] > 0
        assert case in result.output


def test_bad_options_get_one_sentence() -> None:
    result = CliRunner().invoke(hotpath, ["--threads", "0"])
    assert result.exit_code != 0 and "--threads and --rounds must be at least 1" in result.output
