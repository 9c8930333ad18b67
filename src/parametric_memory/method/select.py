"""Stage 2 — selection: keep the transfer items where the chunk matters most.

The score is the perplexity gap: the answer's mean NLL under the student without the chunk
minus its NLL under the teacher with the chunk. Degenerate items (empty, repetitive, a copy
of the prompt, assistant boilerplate) are dropped first. Pure, given the scores.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..config import SelectionConfig
from ..records import TransferItem

_BOILERPLATE = re.compile(
    r"^(i'?ll help|i can help|sure[,!]|certainly|as an ai|i'?m sorry|i cannot|i can'?t|"
    r"here'?s a|i'?d be happy)",
    re.IGNORECASE,
)
_MIN_DISTINCT_WORD_FRACTION = 0.3


def degeneracy(item: TransferItem) -> str | None:
    """Why an item is useless for training, or None if it is fine."""
    answer = item.answer.strip()
    if not answer:
        return "empty answer"
    words = answer.lower().split()
    if len(words) >= 8 and len(set(words)) / len(words) < _MIN_DISTINCT_WORD_FRACTION:
        return "repetitive answer"
    if _normalise(answer) == _normalise(item.prompt):
        return "answer copies the prompt"
    if _BOILERPLATE.match(answer):
        return "assistant boilerplate"
    return None


def select_items(
    items: Sequence[TransferItem], gaps: Sequence[float] | None, config: SelectionConfig
) -> list[int]:
    """Indices of the non-degenerate items with the largest gaps: `keep_ratio` of them (at
    least one), above `min_perplexity_gap` if set. In input order. `gaps` may be None when
    `config.ranks_by_gap` is false: every non-degenerate item is kept."""
    if gaps is None:
        if config.ranks_by_gap:
            raise ValueError("this selection ranks items by perplexity gap; pass the gaps")
        gaps = [0.0] * len(items)  # every candidate is kept: no gap decides anything
    if len(items) != len(gaps):
        raise ValueError(f"got {len(items)} items but {len(gaps)} perplexity gaps")
    candidates = [
        (index, gap)
        for index, (item, gap) in enumerate(zip(items, gaps, strict=True))
        if degeneracy(item) is None
        and (config.min_perplexity_gap is None or gap >= config.min_perplexity_gap)
    ]
    if not candidates:
        return []
    keep = max(1, round(config.keep_ratio * len(candidates)))
    best = sorted(candidates, key=lambda pair: pair[1], reverse=True)[:keep]
    return sorted(index for index, _ in best)


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))
