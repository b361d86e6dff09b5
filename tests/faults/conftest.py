"""One real `chatstack up` for the fault suite, kept across faults and started again where one left it
broken (a fault after which the service does not heal must not fail the next fault's test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatstack.chaos import FaultResult, ServiceDir, table
from tests.helpers.service import start_service, stop_service


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


@pytest.fixture(scope="module")
def fault_table(request: pytest.FixtureRequest) -> Iterator[list[FaultResult]]:
    """Collects each fault's row; the table is printed at the end, as `chatstack chaos --all` prints it."""
    results: list[FaultResult] = []
    yield results
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and results:
        reporter.write_line("\n" + table(results))
