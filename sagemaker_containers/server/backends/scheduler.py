"""The scheduler thread that owns the model: continuous batching of concurrent generations.

One thread runs every forward pass, so torch never blocks the event loop. Each turn it
1. admits waiting requests while fewer than `max_batch_size` run, prefilling each one alone
   (its first token is out as soon as its own prompt is processed), then
2. runs one decode step per group: requests of the same LoRA adapter share one forward pass.
A prefilled request joins its group between two decode steps (see `batching.PaddedCache`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from sagemaker_containers.server.backends.base import BackendError, ChatRequest, TokenEvent
from sagemaker_containers.server.backends.batching import (
    ModelRunner,
    PaddedCache,
    choose_token,
    is_mergeable,
    left_padded,
)
from sagemaker_containers.server.backends.text_stream import TextStream

logger = logging.getLogger(__name__)

Emit = Callable[[TokenEvent | BaseException], None]
AdapterScope = Callable[[str | None], AbstractContextManager[object]]


@dataclass(eq=False)
class Generation:
    """One request's state while it runs; `cancelled` is set from the event loop when the client goes."""

    request: ChatRequest
    prompt_ids: list[int]
    stream: TextStream
    eos_ids: frozenset[int]
    emit: Emit
    generator: torch.Generator | None = None
    generated: list[int] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False

    def accept(self, token: int) -> None:
        """Record one generated token and hand the resulting text (and maybe the end) to the client."""
        self.generated.append(token)
        finish: str | None = None
        if token in self.eos_ids:
            text, finish = self.stream.flush(), "stop"
        else:
            text = self.stream.push(token)
            if self.stream.stopped:
                finish = "stop"
            elif len(self.generated) >= self.request.max_tokens:
                text, finish = text + self.stream.flush(), "length"
        if finish is not None:
            self.finished = True
            self.emit(TokenEvent(text, finish, len(self.prompt_ids), len(self.generated)))
        elif text:
            self.emit(TokenEvent(text))

    def choose(self, logits: torch.Tensor) -> int:
        return choose_token(logits, self.request.temperature, self.request.top_p, self.generator)


@dataclass
class SchedulerStats:
    """Counters for tests and benchmarks: how much work was shared."""

    prefills: int = 0  # forward passes over one prompt
    decode_steps: int = 0  # forward passes that advanced one or more generations by a token
    largest_batch: int = 0  # the most generations advanced by one forward pass


@dataclass(eq=False)
class Group:
    """Running generations that share forward passes (same adapter)."""

    adapter: str | None
    members: list[Generation]
    cache: PaddedCache | None  # None without the KV cache: every step recomputes the whole sequence


class Scheduler:
    """Owns the model on its own thread; `submit` is safe to call from any thread."""

    def __init__(
        self,
        runner: ModelRunner,
        *,
        device: torch.device,
        pad_id: int,
        max_batch_size: int,
        use_kv_cache: bool,
        adapter_scope: AdapterScope = lambda _name: nullcontext(),
    ) -> None:
        self._runner = runner
        self._device = device
        self._pad_id = pad_id
        self._max_batch_size = max(1, max_batch_size)
        self._use_kv_cache = use_kv_cache
        self._adapter_scope = adapter_scope
        self._waiting: deque[Generation] = deque()
        self._groups: list[Group] = []
        self._wake = threading.Condition()
        self._closing = False
        self.stats = SchedulerStats()
        self._thread = threading.Thread(target=self._run, name="transformers-scheduler", daemon=True)
        self._thread.start()

    def submit(self, generation: Generation) -> None:
        with self._wake:
            if self._closing:
                raise BackendError("The transformers backend is shutting down.", status=503)
            self._waiting.append(generation)
            self._wake.notify()

    def close(self) -> None:
        """Stop after the current step; requests still running end with an error."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def _running(self) -> int:
        return sum(len(group.members) for group in self._groups)

    def _run(self) -> None:
        with torch.inference_mode():
            while (admitted := self._next_admissions()) is not None:
                for generation in admitted:
                    try:
                        self._prefill(generation)
                    except Exception as exc:  # the thread must outlive any single request's failure
                        self._fail([generation], exc)
                for group in list(self._groups):
                    try:
                        self._decode(group)
                    except Exception as exc:
                        self._fail(group.members, exc)
                        group.members = []
                self._groups = [group for group in self._groups if group.members]
        gone = BackendError("The transformers backend shut down.", status=503)
        for generation in [*self._waiting, *(g for group in self._groups for g in group.members)]:
            generation.emit(gone)

    def _next_admissions(self) -> list[Generation] | None:
        """Block while idle; None once closing. Cancelled waiting requests are dropped here."""
        with self._wake:
            while not self._closing and not self._waiting and not self._groups:
                self._wake.wait()
            if self._closing:
                return None
            admitted: list[Generation] = []
            while self._waiting and self._running() + len(admitted) < self._max_batch_size:
                generation = self._waiting.popleft()
                if not generation.cancelled:
                    admitted.append(generation)
            return admitted

    @staticmethod
    def _fail(generations: list[Generation], exc: Exception) -> None:
        """A failing forward pass ends the requests it served with an error, never the thread."""
        logger.exception("generation step failed")
        error = BackendError(f"Generation failed: {exc}", status=500)
        for generation in generations:
            generation.emit(error)

    def _prefill(self, generation: Generation) -> None:
        ids = torch.tensor([generation.prompt_ids], dtype=torch.long, device=self._device)
        positions = torch.arange(ids.shape[1], device=self._device).unsqueeze(0)
        cache = DynamicCache() if self._use_kv_cache else None
        with self._adapter_scope(generation.request.adapter):
            logits = self._runner.last_logits(ids, torch.ones_like(ids), positions, cache)
        self.stats.prefills += 1
        generation.accept(generation.choose(logits[0]))
        if generation.finished:
            return
        padded = PaddedCache(cache, ids.shape[1], self._device) if cache is not None else None
        self._join(generation, padded)

    def _join(self, generation: Generation, padded: PaddedCache | None) -> None:
        adapter = generation.request.adapter
        # a cache that cannot be stacked (sliding windows, recurrent states) decodes in a group of its own
        if padded is None or is_mergeable(padded.cache):
            for group in self._groups:
                if group.adapter == adapter and (group.cache is None or is_mergeable(group.cache.cache)):
                    if group.cache is not None and padded is not None:
                        group.cache.extend(padded)
                    group.members.append(generation)
                    return
        self._groups.append(Group(adapter, [generation], padded))

    def _decode(self, group: Group) -> None:
        self._drop(group, lambda g: g.cancelled)
        if not group.members:
            return
        with self._adapter_scope(group.adapter):
            if group.cache is not None:
                last = [[g.generated[-1]] for g in group.members]
                ids = torch.tensor(last, dtype=torch.long, device=self._device)
                mask, positions = group.cache.advance()
                logits = self._runner.last_logits(ids, mask, positions, group.cache.cache)
            else:
                sequences = [g.prompt_ids + g.generated for g in group.members]
                inputs = left_padded(sequences, self._pad_id, self._device)
                logits = self._runner.last_logits(cache=None, **inputs)
        self.stats.decode_steps += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(group.members))
        greedy = logits.argmax(dim=-1).tolist()
        for row, generation in enumerate(group.members):
            sampled = generation.request.temperature > 0.0
            generation.accept(generation.choose(logits[row]) if sampled else int(greedy[row]))
        self._drop(group, lambda g: g.finished)

    @staticmethod
    def _drop(group: Group, gone: Callable[[Generation], bool]) -> None:
        keep = [row for row, generation in enumerate(group.members) if not gone(generation)]
        if len(keep) == len(group.members):
            return
        group.members = [group.members[row] for row in keep]
        if group.cache is not None and keep:
            group.cache.keep(keep)
