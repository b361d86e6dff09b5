"""`chatstack keys`: create, list and revoke API keys in the database of a data directory (or
`DATABASE_URL`), for bootstrapping a tenant before anyone holds an admin token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import click

from chatstack.commands._local import check_tenant_option, data_dir_option, require_service
from lambdas.adapters.auth import SCOPES, Identity

if TYPE_CHECKING:
    from lambdas.services.api_keys import ApiKeyService

DATA_DIR = data_dir_option  # ignored when DATABASE_URL is set
TENANT = click.option("--tenant", required=True, help="The tenant the keys belong to.")


@contextmanager
def _service(data_dir: Path) -> Iterator[ApiKeyService]:
    from chatstack.local.embedded import EmbeddedPostgres, redis_socket_path
    from lambdas.config import Settings
    from lambdas.runtime import Deps
    from lambdas.services.api_keys import ApiKeyService

    url = os.environ.get("DATABASE_URL") or os.environ.get("CHATSTACK_DATABASE_URL") or ""
    redis_url = os.environ.get("REDIS_URL") or os.environ.get("CHATSTACK_REDIS_URL") or ""
    if not url:
        require_service(data_dir)
    # Shares the embedded servers of the running `chatstack up`.
    pg = None if url else EmbeddedPostgres(data_dir / "pg")
    if not url and not redis_url:
        redis_url = f"unix://{redis_socket_path((data_dir / 'redis').resolve())}"
    deps = Deps(
        Settings(database_url=url or (pg.url if pg else ""), redis_url=redis_url, database_pool_max=1)
    )
    try:
        deps.db.migrate()
        yield ApiKeyService(deps)
    finally:
        deps.db.close()


@click.group()
def keys() -> None:
    """Manage API keys (the REST API offers the same under /v1/api-keys)."""


@keys.command()
@TENANT
@click.option("--name", required=True, help="What the key is for (1 to 100 characters).")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES),
              help="Repeatable. Default: chat.")
@click.option("--expires-days", type=click.IntRange(1, 3650), default=None, help="Days until it expires.")
@DATA_DIR
def create(tenant: str, name: str, scopes: tuple[str, ...], expires_days: int | None, data_dir: Path) -> None:
    """Create a key and print it (the only time it is shown)."""
    from lambdas.errors import ChatError

    check_tenant_option(tenant)
    wanted = list(scopes or ("chat",))
    # The operator acts for the tenant with every scope: this is how the first admin key is made.
    operator = Identity(tenant_id=tenant, user_id="cli", scopes=frozenset(SCOPES))
    with _service(data_dir) as service:
        try:
            created = service.create(operator, name=name, scopes=wanted, expires_in_days=expires_days)
        except ChatError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(created.key)
    click.echo(f"id {created.row.id}, scopes {' '.join(created.row.scopes)}; store the key now, it is not "
               "shown again.", err=True)


@keys.command(name="list")
@TENANT
@DATA_DIR
def list_keys(tenant: str, data_dir: Path) -> None:
    """List the tenant's keys (never their secrets)."""
    check_tenant_option(tenant)
    with _service(data_dir) as service:
        rows = service.list(tenant)
    if not rows:
        click.echo(f"no keys for tenant {tenant!r}")
    for r in rows:
        state = "revoked" if r.revoked_at else "active"
        expires = r.expires_at.isoformat(timespec="seconds") if r.expires_at else "never"
        used = r.last_used_at.isoformat(timespec="seconds") if r.last_used_at else "never"
        click.echo(f"{r.id}  {r.prefix}  {state:<7}  {','.join(r.scopes):<18}  expires {expires}  "
                   f"last used {used}  {r.name}")


@keys.command()
@click.argument("key_id")
@TENANT
@DATA_DIR
def revoke(key_id: str, tenant: str, data_dir: Path) -> None:
    """Revoke the key KEY_ID (its id, as `keys list` prints it)."""
    from lambdas.errors import ChatError

    try:
        key_uuid = UUID(key_id)
    except ValueError:
        raise click.BadParameter("must be a key id as `chatstack keys list` prints it.",
                                 param_hint="KEY_ID") from None
    check_tenant_option(tenant)
    with _service(data_dir) as service:
        marks = bool(service.d.settings.redis_url)
        try:
            service.revoke(tenant, str(key_uuid), close_connections=marks)
        except ChatError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(f"revoked {key_uuid}")
    if not marks:
        click.echo("No REDIS_URL: WebSocket connections opened with the key keep working until they close "
                   "(2 hours at most); set REDIS_URL to end them at their next frame.", err=True)
