"""The `transformers` backend: a local Hugging Face causal LM with a KV cache and dynamic batching.

The model lives on one scheduler thread (see `scheduler.py`); `generate` only tokenizes the
prompt, queues the request and relays the token events that the thread posts back onto the event
loop. LoRA adapters are loaded through peft and chosen per request.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from sagemaker_containers.server.backends.base import BackendError, ChatRequest, TokenEvent
from sagemaker_containers.server.backends.batching import ModelRunner
from sagemaker_containers.server.backends.scheduler import Generation, Scheduler, SchedulerStats
from sagemaker_containers.server.backends.text_stream import TextStream


class TransformersBackend:
    """Serves chat requests from the model in `model_dir` (CPU unless a GPU is there or `device` says)."""

    name = "transformers"

    def __init__(
        self,
        model_dir: str,
        device: str | None = None,
        max_batch_size: int = 16,
        adapters: dict[str, str] | None = None,
        use_kv_cache: bool = True,
    ) -> None:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer, model = _load_model(model_dir, self.device)
        self.adapters = dict(adapters or {})
        if self.adapters:
            model = _load_adapters(model, self.adapters)
        self.model = model
        self.max_positions = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        self.eos_ids = _eos_ids(model, self.tokenizer)
        pad_id = self.tokenizer.pad_token_id
        self._scheduler = Scheduler(
            ModelRunner.for_model(model),
            device=self.device,
            pad_id=int(pad_id if pad_id is not None else min(self.eos_ids, default=0)),
            max_batch_size=max_batch_size,
            use_kv_cache=use_kv_cache,
            adapter_scope=self._adapter_scope if self.adapters else lambda _name: nullcontext(),
        )
        self._closed = False
        # The Rust tokenizer refuses concurrent use that changes its state ("Already borrowed"), and
        # prompts are encoded on worker threads while the scheduler thread decodes: one lock for both.
        self._tokenizer_lock = threading.Lock()
        self._locked_tokenizer = _LockedDecoder(self.tokenizer, self._tokenizer_lock)

    @property
    def stats(self) -> SchedulerStats:
        return self._scheduler.stats

    def ready(self) -> bool:
        return not self._closed

    async def generate(self, request: ChatRequest) -> AsyncIterator[TokenEvent]:
        if self._closed:
            raise BackendError("The transformers backend is shut down.", status=503)
        if request.adapter is not None and request.adapter not in self.adapters:
            known = ", ".join(sorted(self.adapters)) or "none loaded"
            raise BackendError(f"Unknown adapter '{request.adapter}' (known: {known}).", status=404)
        if request.max_tokens < 1:
            raise BackendError("max_tokens must be at least 1.", status=400)
        prompt_ids = await asyncio.to_thread(self.encode, request.messages)
        if self.max_positions and len(prompt_ids) + request.max_tokens > self.max_positions:
            raise BackendError(
                f"The prompt ({len(prompt_ids)} tokens) plus max_tokens ({request.max_tokens}) exceeds "
                f"the model's context of {self.max_positions} tokens.",
                status=400,
            )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[TokenEvent | BaseException] = asyncio.Queue()

        def emit(item: TokenEvent | BaseException) -> None:
            with suppress(RuntimeError):  # the loop is closed: nobody is listening any more
                loop.call_soon_threadsafe(events.put_nowait, item)

        generation = Generation(
            request=request,
            prompt_ids=prompt_ids,
            stream=TextStream(self._locked_tokenizer, request.stop),
            eos_ids=self.eos_ids,
            emit=emit,
            generator=_generator(request) if request.temperature > 0.0 else None,
        )
        self._scheduler.submit(generation)
        try:
            while True:
                item = await events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            generation.cancelled = True  # a client that stops reading frees its batch slot

    def encode(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's token ids through the model's chat template (a plain transcript without one)."""
        with self._tokenizer_lock:
            return self._encode(messages)

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
            return [int(i) for i in ids]
        transcript = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return [int(i) for i in self.tokenizer(transcript)["input_ids"]]

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._scheduler.close)

    def _adapter_scope(self, adapter: str | None) -> AbstractContextManager[object]:
        if adapter is None:
            return self.model.disable_adapter()  # type: ignore[no-any-return]
        return _active_adapter(self.model, adapter)


class _LockedDecoder:
    def __init__(self, tokenizer: Any, lock: threading.Lock) -> None:
        self._tokenizer = tokenizer
        self._lock = lock

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str:
        with self._lock:
            return str(self._tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens))


def _load_model(model_dir: str, device: torch.device) -> tuple[Any, Any]:
    path = Path(model_dir)
    if not path.is_dir():
        raise BackendError(f"Cannot load the model in '{model_dir}': no such directory.")
    # float32 on CPU: fast enough for small models and deterministic across batch shapes
    dtype = torch.float32
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    except Exception as exc:  # any loader failure is reported the same way, with its reason
        raise BackendError(f"Cannot load the model in '{model_dir}': {_reason(exc)}.") from exc
    return tokenizer, model.to(device).eval()


def _load_adapters(model: Any, adapters: dict[str, str]) -> Any:
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise BackendError("LoRA adapters need peft: pip install 'chatstack[ml]'.") from exc
    for index, (name, adapter_dir) in enumerate(adapters.items()):
        try:
            if not Path(adapter_dir).is_dir():
                raise FileNotFoundError("no such directory")
            if index == 0:
                model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(adapter_dir, adapter_name=name, is_trainable=False)
        except Exception as exc:
            reason = _reason(exc)
            raise BackendError(f"Cannot load the adapter '{name}' in '{adapter_dir}': {reason}.") from exc
    return model.eval()


@contextmanager
def _active_adapter(model: Any, adapter: str) -> Iterator[None]:
    model.set_adapter(adapter)
    yield


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return frozenset(int(i) for i in ids if i is not None)


def _generator(request: ChatRequest) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(request.seed if request.seed is not None else random.getrandbits(63))
    return generator


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".")
