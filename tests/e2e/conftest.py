"""A real `chatstack up` in a subprocess on a free port, shared by the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.service import Service, start_service, stop_service


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    svc = start_service(tmp_path_factory.mktemp("e2e") / "data", "--token-rate", "50")
    yield svc
    stop_service(svc)
