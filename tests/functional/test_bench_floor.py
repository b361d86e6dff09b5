"""`chatstack bench overhead --floor`, run whole against a real `chatstack up` and the fake model: a burst
with the model holding its tokens gives each chat's own time to first token and the CPU it cost before
it, in windows that the method needs clean (every chat at the model in the first, no token early or
late)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from chatstack.bench.overhead import overhead


def test_a_burst_reports_the_cpu_before_its_first_tokens_and_the_floor_it_sets(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    # Twenty chats: CPU times come in ticks of 10 ms per process, and the processes' idle CPU is taken
    # off, so a handful of chats would leave too few ticks to tell from noise.
    args = ["--concurrency", "20", "--arrivals", "burst", "--chats", "1", "--max-tokens", "8", "--floor"]
    result = CliRunner().invoke(overhead, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    level = json.loads(out.read_text())["levels"]["20"]["burst"]
    assert level["pipeline"]["failures"] == 0
    floor = level["floor"]
    assert floor["window_ok"] is True
    cpu = floor["cpu_ms_before_first_token"]
    assert cpu["lambda hosts"] > 0 and cpu["total"] > 0
    assert floor["cpu_bound_p50_ms"] >= 20.0  # at least the model's own time to first token
    # Every chat's own time: its TTFT less the model's hold, so positive and far below the hold.
    assert floor["own_ms"]["n"] == 20 and 0 < floor["own_ms"]["p50"] < 1000
    assert "one burst of 20, the model holding its tokens" in result.output


def test_the_floor_needs_the_fake_model() -> None:
    result = CliRunner().invoke(overhead, ["--floor", "--model", "extractive", "--concurrency", "1"])
    assert result.exit_code != 0
    assert "--floor slows the fake model down for a while: it needs --model fake." in result.output
