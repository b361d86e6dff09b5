"""`chatstack bench ...`: benchmarks that print their figures and write them to JSON."""

from __future__ import annotations

import click

from chatstack.cli import LazyGroup


@click.group(
    cls=LazyGroup,
    lazy={
        "overhead": "chatstack.bench.overhead:overhead",
        "model": "chatstack.bench.model:model",
        "rag": "chatstack.bench.rag:rag",
        "connections": "chatstack.bench.connections:connections",
        "hotpath": "chatstack.bench.hotpath:hotpath",
    },
)
def bench() -> None:
    """Benchmarks; each prints its figures and writes a JSON file."""
