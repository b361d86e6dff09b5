"""`chatstack token`: print a JWT signed with the local dev key, accepted by the running service."""

from __future__ import annotations

from pathlib import Path

import click

from chatstack.commands._local import check_tenant_option, check_user_option, data_dir_option, require_service
from lambdas.adapters.auth import SCOPES


@click.command()
@click.option("--user", required=True, help="The user id (the token's sub).")
@click.option("--tenant", required=True, help="The tenant id.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help="A scope, repeatable. Default: chat.",
)
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(1, 30 * 24 * 3600), help="Seconds."
)
@data_dir_option
def token(user: str, tenant: str, scopes: tuple[str, ...], ttl: int, data_dir: Path) -> None:
    """Print a development JWT for USER in TENANT."""
    from chatstack.local.identity import DEFAULT_SCOPES, DevIdentity

    check_user_option(user)
    check_tenant_option(tenant)  # the service refuses a token for any other id (401)
    from lambdas.config import get_settings

    longest = get_settings().auth_max_token_lifetime_s
    if ttl > longest:  # the service refuses tokens that live longer (CHATSTACK_AUTH_MAX_TOKEN_LIFETIME_S)
        raise click.BadParameter(f"the service accepts tokens of at most {longest} s.", param_hint="--ttl")
    require_service(data_dir)  # a key made in a data dir no service runs on signs tokens nobody accepts
    click.echo(
        DevIdentity(data_dir / "identity").mint(
            user=user, tenant=tenant, scopes=scopes or DEFAULT_SCOPES, ttl_s=ttl
        )
    )
