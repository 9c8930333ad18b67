"""Shards' saved weights kept in host memory between answers, least recently used first
out: a composed answer reads several shards per question, and the same shards come back
across a batch and across calls."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

HELD_WEIGHT_BYTES = 512 << 20
"""Most bytes of shard weights kept in host memory for composed answers: 650 shards of the
default adapter."""


class WeightsCache:
    """Least recently used shard weights (state dicts) up to a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._held: OrderedDict[Path, dict] = OrderedDict()
        self._bytes = 0

    def get(self, path: Path) -> dict | None:
        weights = self._held.get(path)
        if weights is not None:
            self._held.move_to_end(path)
        return weights

    def put(self, path: Path, weights: dict) -> dict:
        self._held[path] = weights
        self._bytes += _nbytes(weights)
        while self._bytes > self.budget and len(self._held) > 1:
            _, dropped = self._held.popitem(last=False)
            self._bytes -= _nbytes(dropped)
        return weights


def _nbytes(weights: dict) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in weights.values())
