"""`chatstack bench model`: throughput of the `transformers` backend on a random Llama-style model.

Two comparisons, both through the backend's public `generate` (tokenization, scheduling and
streaming included):
- KV cache: one request generating `--tokens` tokens with and without the cache;
- dynamic batching: 1, 4 and 16 concurrent requests served batched versus one by one
  (`max_batch_size=1`), as aggregate generated tokens per second.
The model is random (no download), so the figures measure the serving machinery, not answer quality.
"""

from __future__ import annotations

import asyncio
import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

PROMPTS = (
    "Summarise how a key-value cache speeds up decoding.",
    "Write a short note to the on-call engineer about the failover drill.",
    "What does the quick brown fox do?",
    "List three reasons to batch requests on one accelerator.",
)


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".bench/model.json"),
    show_default=True,
    help="Where to write the figures as JSON.",
)
@click.option("--tokens", default=256, show_default=True, help="Tokens generated in the KV-cache comparison.")
@click.option(
    "--batch-tokens", default=128, show_default=True, help="Tokens per request in the batching runs."
)
@click.option(
    "--concurrency",
    "levels",
    multiple=True,
    type=int,
    default=(1, 4, 16),
    show_default=True,
    help="Concurrent requests in the batching comparison (repeatable).",
)
@click.option("--layers", default=6, show_default=True, help="Decoder layers of the random model.")
@click.option("--hidden", default=384, show_default=True, help="Hidden size of the random model.")
@click.option("--repeat", default=3, show_default=True, help="Runs per figure; the median is reported.")
@click.option("--device", default=None, help="torch device (default: cuda when present, else cpu).")
def model(
    out: Path,
    tokens: int,
    batch_tokens: int,
    levels: tuple[int, ...],
    layers: int,
    hidden: int,
    repeat: int,
    device: str | None,
) -> None:
    """Tokens per second of the transformers backend: KV cache on/off, batched vs one by one."""
    try:
        import torch
        import transformers

        from sagemaker_containers.server.backends.random_model import ModelShape, create_random_chat_model
    except ImportError as exc:
        raise click.ClickException(
            f"This benchmark needs the ml extra: pip install 'chatstack[ml]' ({exc})."
        ) from exc
    if repeat < 1 or tokens < 1 or batch_tokens < 1 or not levels or min(levels) < 1:
        raise click.ClickException("--repeat, --tokens, --batch-tokens and --concurrency must be positive.")
    if hidden % 64:
        raise click.ClickException("--hidden must be a multiple of 64 (the head size).")
    shape = ModelShape(
        layers=layers,
        hidden=hidden,
        heads=hidden // 64,
        kv_heads=max(1, hidden // 192),
        intermediate=hidden * 8 // 3,
        vocab=320,
        max_positions=4096,
    )
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory(prefix="chatstack-bench-model-") as tmp:
        model_dir = str(create_random_chat_model(tmp, shape))
        results = asyncio.run(_measure(model_dir, device, tokens, batch_tokens, sorted(set(levels)), repeat))
    report: dict[str, Any] = {
        "machine": {
            "device": results.pop("device"),
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "model": {**asdict(shape), "parameters": results.pop("parameters")},
        "repeat": results.pop("repeat"),
        **results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _print(report)
    click.echo(f"\nwritten to {out}")


async def _measure(
    model_dir: str, device: str | None, tokens: int, batch_tokens: int, levels: list[int], repeat: int
) -> dict[str, Any]:
    from sagemaker_containers.server.backends.transformers_backend import TransformersBackend

    cached = TransformersBackend(model_dir, device=device, max_batch_size=max(levels))
    uncached = TransformersBackend(model_dir, device=device, max_batch_size=1, use_kv_cache=False)
    single = TransformersBackend(model_dir, device=device, max_batch_size=1)
    try:
        for backend in (cached, uncached, single):  # first calls allocate; keep them out of the timings
            await _run(backend, 1, 8)
        with_cache, without_cache, same = await _compare(cached, uncached, 1, tokens, repeat)
        kv = {
            "generated_tokens": tokens,
            "with_cache_tokens_per_s": with_cache,
            "without_cache_tokens_per_s": without_cache,
            "speedup": with_cache / without_cache,
            "same_greedy_output": same,
        }
        batching = []
        for level in levels:
            batched, serial, same = await _compare(cached, single, level, batch_tokens, repeat)
            batching.append(
                {
                    "concurrent_requests": level,
                    "tokens_per_request": batch_tokens,
                    "batched_tokens_per_s": batched,
                    "one_by_one_tokens_per_s": serial,
                    "speedup": batched / serial,
                    "same_greedy_output": same,
                }
            )
        return {
            "device": str(cached.device),
            "parameters": sum(p.numel() for p in cached.model.parameters()),
            "repeat": repeat,
            "kv_cache": kv,
            "batching": batching,
            "targets": {"kv_cache_speedup_min": 3.0, "batching_speedup_at_16_min": 4.0},
        }
    finally:
        for backend in (cached, uncached, single):
            await backend.aclose()


async def _compare(
    first: Any, second: Any, concurrent: int, max_tokens: int, repeat: int
) -> tuple[float, float, bool]:
    """Median tokens/s of each backend over `repeat` alternating runs (other load on the machine hits
    both alike), and whether their greedy answers were identical."""
    rates: tuple[list[float], list[float]] = ([], [])
    same = True
    for _ in range(repeat):
        rate_a, texts_a = await _run(first, concurrent, max_tokens)
        rate_b, texts_b = await _run(second, concurrent, max_tokens)
        rates[0].append(rate_a)
        rates[1].append(rate_b)
        same = same and texts_a == texts_b
    return statistics.median(rates[0]), statistics.median(rates[1]), same


async def _run(backend: Any, concurrent: int, max_tokens: int) -> tuple[float, list[str]]:
    """Aggregate generated tokens per second of `concurrent` requests started together, and their texts."""
    from sagemaker_containers.server.backends.base import ChatRequest

    async def one(index: int) -> tuple[int, str]:
        prompt = f"{PROMPTS[index % len(PROMPTS)]} (request {index})"
        request = ChatRequest(messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens)
        parts, generated = [], 0
        async for event in backend.generate(request):
            parts.append(event.text)
            generated = event.completion_tokens or generated
        return generated, "".join(parts)

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(i) for i in range(concurrent)))
    elapsed = time.perf_counter() - started
    return sum(n for n, _ in answers) / elapsed, [text for _, text in answers]


def _print(report: dict[str, Any]) -> None:
    model, kv = report["model"], report["kv_cache"]
    click.echo(
        f"random Llama: {model['layers']} layers, hidden {model['hidden']}, "
        f"{model['parameters'] / 1e6:.1f} M parameters, on {report['machine']['device']}"
    )
    click.echo(f"median of {report['repeat']} runs each")
    click.echo(f"\nKV cache, one request, {kv['generated_tokens']} tokens")
    click.echo(f"  with cache     {kv['with_cache_tokens_per_s']:9.1f} tok/s")
    click.echo(f"  without cache  {kv['without_cache_tokens_per_s']:9.1f} tok/s")
    click.echo(f"  speedup        {kv['speedup']:9.2f}x   same greedy output: {kv['same_greedy_output']}")
    click.echo("\nconcurrent  batched tok/s  one-by-one tok/s  speedup  same output")
    for row in report["batching"]:
        click.echo(
            f"{row['concurrent_requests']:>10}  {row['batched_tokens_per_s']:>13.1f}  "
            f"{row['one_by_one_tokens_per_s']:>16.1f}  {row['speedup']:>6.2f}x  {row['same_greedy_output']}"
        )
