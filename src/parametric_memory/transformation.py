"""One memory transformation T_i: θ_{i-1} + C_i → θ_i — elicit a transfer set from the new
chunks, select the informative items, and consolidate them (with replayed earlier items)
into the adapter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .chunking import Chunk
from .config import MemoryConfig
from .consolidate import TrainingStats, train_student
from .distillation import Example, compute_teacher_targets, student_nll, tokenize_items
from .elicit import TransferItem, elicit_transfer_set
from .models import LoadedModel
from .replay import sample_replay
from .select import select_items

logger = logging.getLogger(__name__)


@dataclass
class TransformationResult:
    selected: list[TransferItem]
    """The new items kept; they join the memory's replay set."""
    elicited: int
    replayed: int
    training: TrainingStats


def transform(
    lm: LoadedModel,
    chunks: Sequence[Chunk],
    held_items: Sequence[TransferItem],
    held_chunks: dict[str, Chunk],
    config: MemoryConfig,
    rng: random.Random,
) -> TransformationResult:
    known_chunks = {**held_chunks, **{chunk.id: chunk for chunk in chunks}}
    clock = _Clock()
    items = elicit_transfer_set(lm, chunks, config.elicitation)
    clock.lap("elicit")
    examples = _with_teacher_targets(lm, items, known_chunks, config)
    gaps = _perplexity_gaps(lm, examples, config)
    chosen = select_items(items, gaps, config.selection)
    selected = [replace(items[i], perplexity_gap=gaps[i]) for i in chosen]
    clock.lap("select")
    replay = sample_replay(held_items, len(selected), config.consolidation.replay_ratio, rng)
    training_set = [examples[i] for i in chosen]
    training_set += _with_teacher_targets(lm, replay, known_chunks, config)
    clock.lap("replay targets")
    stats = train_student(lm, training_set, config.consolidation, rng)
    clock.lap("consolidate")
    logger.info(
        "T: %d chunks, %d items elicited, %d kept, %d replayed; %s",
        len(chunks),
        len(items),
        len(selected),
        len(replay),
        clock,
    )
    return TransformationResult(selected, len(items), len(replay), stats)


def retrain(
    lm: LoadedModel,
    items: Sequence[TransferItem],
    chunks: dict[str, Chunk],
    config: MemoryConfig,
    rng: random.Random,
) -> TrainingStats:
    """Consolidate already-selected items into the (fresh) adapter, all together."""
    return train_student(
        lm, _with_teacher_targets(lm, items, chunks, config), config.consolidation, rng
    )


class _Clock:
    def __init__(self) -> None:
        self._start = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._start
        self._start = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in self.laps.items())


def _with_teacher_targets(
    lm: LoadedModel, items: Sequence[TransferItem], chunks: dict[str, Chunk], config: MemoryConfig
) -> list[Example]:
    examples = tokenize_items(lm, items, chunks)
    consolidation = config.consolidation
    compute_teacher_targets(lm, examples, consolidation.teacher_top_k, consolidation.batch_size)
    return examples


def _perplexity_gaps(lm: LoadedModel, examples: list[Example], config: MemoryConfig) -> list[float]:
    without_chunk = student_nll(lm, examples, config.consolidation.batch_size)
    return [nll - e.teacher_nll for nll, e in zip(without_chunk, examples, strict=True)]
