"""Database credentials without the master secret (cloud): with CHATSTACK_DATABASE_USER the service
connects through RDS Proxy as that user with an IAM auth token asked afresh for every new connection.
The token is botocore's real presigned `connect` URL (the documented RDS IAM token,
https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.Connecting.html); the
per-connection password path runs against real PostgreSQL (which accepts any password locally)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from lambdas.adapters.db import Database
from lambdas.config import Settings
from lambdas.runtime import database_password, database_url


@pytest.fixture()
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def test_with_a_database_user_the_url_holds_no_password_and_each_token_is_an_iam_connect_token(
    aws_credentials: None,
) -> None:
    host = "db.proxy-abc.us-west-2.rds.amazonaws.com"
    settings = Settings(environment="cloud", region="us-west-2", database_host=host,
                        database_name="chatstack", database_user="chatstack",
                        database_secret_arn="arn:aws:secretsmanager:us-west-2:111111111111:secret:unused")
    url = urlsplit(database_url(settings))
    assert url.username == "chatstack" and url.password is None
    assert url.hostname == settings.database_host and parse_qs(url.query)["sslmode"] == ["require"]
    token_of = database_password(settings)
    assert token_of is not None
    token = token_of()
    assert token.startswith(f"{settings.database_host}:5432/?")
    query = parse_qs(token.split("?", 1)[1])
    assert query["Action"] == ["connect"] and query["DBUser"] == ["chatstack"]
    assert "us-west-2/rds-db/aws4_request" in query["X-Amz-Credential"][0]


def test_without_a_database_user_nothing_changes() -> None:
    assert database_password(Settings(environment="test", database_url="postgresql://x@y/z")) is None
    assert database_password(Settings(environment="cloud", database_secret_arn="arn:x")) is None


def test_every_new_connection_asks_for_a_fresh_password(pg_url: str) -> None:
    asked: list[int] = []

    def password() -> str:
        asked.append(1)
        return "token"

    db = Database(pg_url, max_size=2, min_size=1, password=password)
    try:
        assert db.ping()
        before = len(asked)
        assert before >= 1
        db.migrate()  # its own connection, outside the pool
        assert len(asked) == before + 1
    finally:
        db.close()
