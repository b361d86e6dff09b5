"""Run the local model server:

    python -m sagemaker_containers.server --host H --port P --backend extractive|openai|transformers|llamacpp
        [--token-rate TOKENS_PER_S] [--model-dir DIR] [--model-file X.gguf] [--upstream URL]
        [--adapter NAME=DIR ...]
        [--payload-split N]

Prints one line, `model server ready on http://H:P`, once it listens (with the real port when
`--port 0`); callers then wait for `GET /ping`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
from typing import Any

import uvicorn

from sagemaker_containers.server.app import create_app
from sagemaker_containers.server.backends import BACKENDS, BackendError, load_backend


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sagemaker_containers.server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="extractive")
    parser.add_argument("--token-rate", type=float, default=0.0,
                        help="extractive: tokens per second per stream (0: as fast as possible)")
    parser.add_argument("--fail-after", type=int, default=None,
                        help="extractive: fail every answer after N tokens (to test failure handling)")
    parser.add_argument("--model-dir", help="transformers: a local Hugging Face model directory")
    parser.add_argument("--model-file", help="llamacpp: a GGUF model file")
    parser.add_argument("--n-ctx", type=int, default=4096, help="llamacpp: context length in tokens")
    parser.add_argument("--threads", type=int, default=None, help="llamacpp: CPU threads (default: all)")
    parser.add_argument("--device", default=None, help="transformers: torch device (default: best available)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="transformers: concurrent sequences")
    parser.add_argument("--upstream", help="openai: base URL of an OpenAI-compatible server")
    parser.add_argument("--model", default=None, help="openai: model name (default: the first listed)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                        help="a LoRA adapter, selected per request by the body field 'adapters'")
    parser.add_argument("--payload-split", type=int, default=0,
                        help="SageMaker stand-in: cut PayloadParts every N bytes (0: one per write)")
    parser.add_argument("--default-max-tokens", type=int, default=512)
    return parser.parse_args(argv)


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    adapters: dict[str, str] = {}
    for item in args.adapter:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--adapter takes NAME=DIR, not {item!r}.")
        adapters[name] = path
    if args.backend == "extractive":
        return {"token_rate": args.token_rate, "fail_after": args.fail_after, "adapters": adapters}
    if args.backend == "llamacpp":
        if adapters:
            raise SystemExit("--backend llamacpp serves no per-request --adapter.")
        if not args.model_file:
            raise SystemExit("--backend llamacpp needs --model-file X.gguf.")
        return {"model_file": args.model_file, "n_ctx": args.n_ctx, "threads": args.threads}
    if args.backend == "openai":
        if not args.upstream:
            raise SystemExit("--backend openai needs --upstream URL.")
        return {"upstream": args.upstream, "model": args.model, "api_key": os.environ.get("OPENAI_API_KEY")}
    if not args.model_dir:
        raise SystemExit("--backend transformers needs --model-dir DIR.")
    return {"model_dir": args.model_dir, "device": args.device, "max_batch_size": args.max_batch_size,
            "adapters": adapters or None}


async def serve(args: argparse.Namespace) -> None:
    try:
        backend = load_backend(args.backend, **backend_options(args))
    except BackendError as exc:
        raise SystemExit(f"Cannot start the {args.backend} backend: {exc.message.rstrip('.')}.") from None
    app = create_app(backend, payload_split=args.payload_split, default_max_tokens=args.default_max_tokens)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise SystemExit(f"Cannot listen on {args.host}:{args.port}: {exc.strerror}.") from None
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if server.started:
        host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
        print(f"model server ready on http://{host}:{port}", flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.payload_split < 0:
        raise SystemExit("--payload-split must be zero or positive.")
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
