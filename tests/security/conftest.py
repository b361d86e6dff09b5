"""The security suite: attacks made against a running `chatstack up` (one service per module) and fast
tests on real PostgreSQL/Redis for the rules the attacks rely on."""

from tests.functional.conftest import pg_url, redis_url  # noqa: F401  (the same real-server fixtures)
