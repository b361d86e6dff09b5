"""The tensor side of dynamic batching: one forward pass for many sequences of different lengths.

Sequences are left-padded so that every row's newest token sits in the last column. Padded
positions are masked out of attention and every row gets its own position ids, so a row's logits
are the ones it would get alone (bit for bit up to float rounding).

With the KV cache, each request is prefilled alone and its `DynamicCache` is then merged into the
running batch between decode steps: keys and values are left-padded with zeros to a common length
and concatenated along the batch dimension (`PaddedCache.extend`). Finished rows are dropped with
`batch_select_indices`, and columns that became padding in every row are cut off again.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
from torch.nn import functional
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def is_mergeable(cache: DynamicCache) -> bool:
    """Only plain full-attention layers can be padded and stacked (not sliding windows, not SSM states)."""
    return all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)


class PaddedCache:
    """A batched, left-padded `DynamicCache` plus the 2D attention mask saying which columns are real."""

    def __init__(self, cache: DynamicCache, length: int, device: torch.device) -> None:
        self.cache = cache
        self.mask = torch.ones(1, length, dtype=torch.long, device=device)

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    def extend(self, other: PaddedCache) -> None:
        """Append the rows of `other` (typically one freshly prefilled request)."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(_layers(self.cache), _layers(other.cache), strict=True):
            mine.keys = torch.cat([_left_pad(mine.keys, width), _left_pad(theirs.keys, width)])
            mine.values = torch.cat([_left_pad(mine.values, width), _left_pad(theirs.values, width)])
        self.mask = torch.cat([_left_pad_mask(self.mask, width), _left_pad_mask(other.mask, width)])

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (in this order), then drop the columns that are padding in all of them."""
        index = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        first_real = int(self.mask.any(dim=0).long().argmax())
        if first_real > 0:
            self.mask = self.mask[:, first_real:]
            for layer in _layers(self.cache):
                layer.keys = layer.keys[..., first_real:, :]
                layer.values = layer.values[..., first_real:, :]

    def advance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Make room for one new token per row; return (attention_mask, position_ids) for that step."""
        positions = self.mask.sum(dim=1, keepdim=True)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        return self.mask, positions


def left_padded(sequences: list[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Inputs for a full (cache-free) forward pass over sequences of different lengths."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": positions.to(device),
    }


class _Layer(Protocol):
    keys: torch.Tensor
    values: torch.Tensor


def _layers(cache: DynamicCache) -> list[_Layer]:
    """The cache's layers as plain key/value holders (`is_mergeable` checked that they are)."""
    return cast(list[_Layer], cache.layers)


def _left_pad(states: torch.Tensor, width: int) -> torch.Tensor:
    # states: [batch, heads, seq, head_dim]; zeros are never attended to (masked), so NaN cannot leak in.
    return functional.pad(states, (0, 0, width - states.shape[-2], 0))


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return functional.pad(mask, (width - mask.shape[1], 0))


@dataclass
class ModelRunner:
    """Calls a causal LM's forward with the cache keyword of the installed transformers version."""

    model: Any
    cache_keyword: str
    keeps_last_logits: bool

    @classmethod
    def for_model(cls, model: Any) -> ModelRunner:
        parameters = inspect.signature(model.forward).parameters
        if "cache" in parameters:  # transformers >= 5.x renamed past_key_values
            keyword = "cache"
        else:
            base = getattr(model, "get_base_model", lambda: model)()
            keyword = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        return cls(model=model, cache_keyword=keyword, keeps_last_logits="logits_to_keep" in parameters)

    def last_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache | None,
    ) -> torch.Tensor:
        """The float32 logits of the last column, one row per sequence ([batch, vocab])."""
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": cache is not None,
        }
        if cache is not None:
            kwargs[self.cache_keyword] = cache
        if self.keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        output = self.model(**kwargs)
        logits: torch.Tensor = output.logits[:, -1, :].float()
        return logits


def choose_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """Greedy at temperature 0, otherwise nucleus sampling drawn from the request's own generator."""
    if temperature <= 0.0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.cpu() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        sorted_probs[(sorted_probs.cumsum(0) - sorted_probs) >= top_p] = 0.0
        pick = int(torch.multinomial(sorted_probs, 1, generator=generator))
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))
