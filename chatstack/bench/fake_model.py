"""A fake LMI model server for benchmarks: the `/invocations` contract (JSON lines of
`chat.completion.chunk`, then a usage-only chunk), a fixed time to first token and a fixed gap between
tokens, and no computation, so what a benchmark measures is the pipeline in front of it.

    python -m chatstack.bench.fake_model --ttft-ms 20 --token-ms 10   # prints its URL

`GET /ping` answers 200 as the LMI container's health check does. `PUT /timing` with
`{"ttft_ms": ..., "token_ms": ...}` changes the timing of the answers that start after it (the benchmark
that started the server uses it to slow the model down for one phase and back); it and `GET /timing`
answer the timing and how many requests `/invocations` has taken.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

READY = "fake model listening on "


def _chunk(rid: str, text: str, finish: str | None) -> bytes:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return _line(
        {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "choices": [choice]}
    )


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def create_app(ttft_ms: float, token_ms: float) -> Starlette:
    timing = {"ttft_ms": ttft_ms, "token_ms": token_ms}
    taken = [0]

    async def answer(max_tokens: int, rid: str) -> AsyncIterator[bytes]:
        # Sleep to deadlines, not by fixed steps: a late wake-up does not slow the whole answer down.
        start = time.perf_counter()
        ttft_ms, token_ms = timing["ttft_ms"], timing["token_ms"]
        for i in range(max_tokens):
            due = start + (ttft_ms + i * token_ms) / 1000
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            end = "." if (i + 1) % 20 == 0 else ""  # a sentence every 20 tokens, as in the planner
            yield _chunk(rid, f" w{i}{end}", "length" if i == max_tokens - 1 else None)
        usage = {"prompt_tokens": 10, "completion_tokens": max_tokens, "total_tokens": 10 + max_tokens}
        yield _line({"id": rid, "object": "chat.completion.chunk", "choices": [], "usage": usage})

    async def invocations(request: Request) -> Response:
        taken[0] += 1
        body = await request.json()
        max_tokens = max(1, int(body.get("max_tokens") or 64))
        rid = f"fake-{time.monotonic_ns()}"
        if body.get("stream"):
            return StreamingResponse(answer(max_tokens, rid), media_type="application/jsonlines")
        parts = [json.loads(line) async for line in answer(max_tokens, rid)]
        text = "".join(p["choices"][0]["delta"]["content"] for p in parts if p["choices"])
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        return JSONResponse(
            {"id": rid, "object": "chat.completion", "choices": [choice], "usage": parts[-1]["usage"]}
        )

    async def ping(_: Request) -> Response:
        return Response(status_code=200)

    async def timing_route(request: Request) -> Response:
        if request.method == "PUT":
            body = await request.json()
            for key in timing:
                if key in body:
                    timing[key] = float(body[key])
        return JSONResponse({**timing, "requests": taken[0]})

    return Starlette(
        routes=[
            Route("/invocations", invocations, methods=["POST"]),
            Route("/ping", ping),
            Route("/timing", timing_route, methods=["GET", "PUT"]),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ttft-ms", type=float, default=20.0)
    parser.add_argument("--token-ms", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    print(f"{READY}http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        create_app(args.ttft_ms, args.token_ms), log_level="warning", access_log=False, backlog=4096
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
