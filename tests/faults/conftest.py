"""One real `chatstack up` for the fault suite, kept across faults and started again where one left it
broken (a fault after which the service does not heal must not fail the next fault's test). The table
of all faults is printed at the end of the run, as `chatstack chaos --all` prints it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatstack.chaos import FaultResult, ServiceDir, table
from tests.helpers.service import start_service, stop_service

RESULTS: list[FaultResult] = []


@pytest.fixture(scope="module")
def chaos_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceDir]:
    data = tmp_path_factory.mktemp("faults") / "data"
    # 20 tokens/s: an answer streams for a few seconds, so faults land mid-stream. RAG off: retrieval is
    # not what these faults test, and a restart would otherwise wait for the embedding model to load.
    first = start_service(data, "--token-rate", "20", env={"CHATSTACK_RAG_ENABLED": "false"})
    service = ServiceDir(data)
    yield service
    service.stop()  # whichever `up` runs there now: `whole-service` starts a new one
    stop_service(first)


@pytest.fixture
def fault_table() -> list[FaultResult]:
    return RESULTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if RESULTS:
        terminalreporter.write_sep("-", "faults (docs/reliability.md)")
        terminalreporter.write_line(table(RESULTS))
