"""llama.cpp through llama-cpp-python's bindings: a quantized GGUF model on the CPU (or Metal/CUDA when
the wheel was built for them), behind the same LMI `/invocations` contract as every backend.

One llama.cpp context serves one sequence at a time, so requests take turns (a lock); the blocking
generation runs on a worker thread and hands its pieces to the event loop, which stays free for
other requests and health checks. Cancelling the stream (the client went away) stops generating at
the next token. LoRA adapters are loaded with the model in llama.cpp, not chosen per request, so a
request naming one is refused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

from sagemaker_containers.server.backends.base import BackendError, ChatRequest, TokenEvent

_END = object()


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, model_file: str, n_ctx: int = 4096, threads: int | None = None, seed: int = 0) -> None:
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendError(
                "llama-cpp-python is not installed; `pip install 'chatstack[llamacpp]'` builds it", status=500
            ) from None
        path = Path(model_file)
        if not path.is_file():
            raise BackendError(f"no GGUF file at {model_file}", status=400)
        try:
            self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, seed=seed, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp cannot load {path.name}: {exc}", status=400) from None
        self._turn = threading.Lock()

    def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        self.llm.close()

    def _count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0

    def _pieces(self, request: ChatRequest, stop: threading.Event) -> Iterator[tuple[str, str | None]]:
        """(text, finish_reason) of each streamed chunk; runs on a worker thread, holding the turn."""
        with self._turn:
            chunks: Any = self.llm.create_chat_completion(
                messages=cast(Any, request.messages),
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=list(request.stop) or None,
                seed=request.seed,
                stream=True,
            )
            for chunk in chunks:
                if stop.is_set():
                    break
                choice = chunk["choices"][0]
                yield choice["delta"].get("content") or "", choice.get("finish_reason")

    async def generate(self, request: ChatRequest) -> AsyncIterator[TokenEvent]:
        if request.adapter is not None:
            raise BackendError(
                f"adapter {request.adapter!r}: the llama.cpp backend serves no per-request LoRA adapters",
                status=400,
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for item in self._pieces(request, stop):
                    loop.call_soon_threadsafe(queue.put_nowait, item)
            except Exception as exc:  # handed to the event loop, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            loop.call_soon_threadsafe(queue.put_nowait, _END)

        worker = loop.run_in_executor(None, produce)
        prompt_tokens = sum(self._count(m.get("content", "")) for m in request.messages)
        completion, finish = 0, "stop"
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise BackendError(f"llama.cpp failed: {item}")
                text, reason = item
                finish = reason or finish
                if text:
                    completion += 1  # one streamed chunk per generated token
                    yield TokenEvent(text)
            yield TokenEvent("", "length" if finish == "length" else "stop", prompt_tokens, completion)
        finally:
            stop.set()
            await worker
