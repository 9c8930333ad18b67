"""One memory transformation T_i: θ_{i-1} + C_i → θ_i — elicit a transfer set from the new
chunks, select the informative items, and consolidate them (with replayed earlier items)
into the adapter."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import MemoryConfig
from ..engine import AdapterSlots, LoadedModel, adapter_disabled, train_slots
from ..records import Chunk, Example, TrainingStats, TransferItem
from .consolidate import train_student
from .distillation import compute_teacher_targets, student_nll, tokenize_items
from .elicit import elicit_transfer_set
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
    batch = config.consolidation.batch_size
    examples = _with_teacher_targets(lm, items, known_chunks, config, batch)
    clock.lap("teacher")
    gaps = _perplexity_gaps(lm, examples, batch, config)
    chosen = select_items(items, gaps, config.selection)
    selected = [replace(items[i], perplexity_gap=_gap(gaps, i)) for i in chosen]
    clock.lap("select")
    replay = sample_replay(held_items, len(selected), config.consolidation.replay_ratio, rng)
    training_set = [examples[i] for i in chosen]
    training_set += _with_teacher_targets(lm, replay, known_chunks, config, batch)
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


_INFERENCE_ROWS = 64
"""Rows of one teacher or perplexity pass when documents are transformed together."""


_ATTENTION_WITHOUT_CUDNN = [
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]
"""cuDNN's attention builds a graph on the CPU for every new shape: with a new padded width
at every pass, that host-side work was a large share of a training step."""


@sdpa_kernel(_ATTENTION_WITHOUT_CUDNN)
def transform_fresh_documents(
    lm: LoadedModel,
    documents: Sequence[Sequence[Chunk]],
    config: MemoryConfig,
    rngs: Sequence[random.Random],
) -> tuple[list[TransformationResult], AdapterSlots]:
    """`transform` of several documents at once, each (all its chunks) into its own fresh
    adapter: one slot of the returned `AdapterSlots` per document. Elicitation and the
    teacher run over all of their chunks in large batches; selection is per document. The
    model's own adapter must be fresh (it is the student of the perplexity gaps). Each slot
    is what `transform` would give its document alone, up to batch-composition rounding."""
    chunks = [chunk for document in documents for chunk in document]
    width = len(documents)
    clock = _Clock()
    batch = min(1024, config.elicitation.generation_batch_size * width)
    items = elicit_transfer_set(
        lm, chunks, config.elicitation.model_copy(update={"generation_batch_size": batch})
    )
    clock.lap("elicit")
    batch = _INFERENCE_ROWS
    examples = _with_teacher_targets(lm, items, {c.id: c for c in chunks}, config, batch)
    clock.lap("teacher")
    # A fresh adapter adds exactly zero: the base model gives the same gaps without the
    # LoRA branch's float32 copies of every layer's input.
    with adapter_disabled(lm.model):
        gaps = _perplexity_gaps(lm, examples, batch, config)
    document_of = {chunk.id: i for i, document in enumerate(documents) for chunk in document}
    items_of: list[list[int]] = [[] for _ in documents]
    for index, item in enumerate(items):
        items_of[document_of[item.chunk_id]].append(index)
    chosen = [_select_among(items, gaps, mine, config) for mine in items_of]
    clock.lap("select")
    slots = AdapterSlots(lm, width)
    training = [[examples[i] for i in picked] for picked in chosen]
    stats = train_slots(lm, slots, training, config.consolidation, rngs)
    clock.lap("consolidate")
    logger.info(
        "T of %d documents together: %d chunks, %d items elicited, %d kept; %s",
        width,
        len(chunks),
        len(items),
        sum(len(picked) for picked in chosen),
        clock,
    )
    results = [
        TransformationResult(
            [replace(items[i], perplexity_gap=_gap(gaps, i)) for i in picked], len(mine), 0, stat
        )
        for mine, picked, stat in zip(items_of, chosen, stats, strict=True)
    ]
    return results, slots


def _select_among(
    items: list[TransferItem],
    gaps: list[float] | None,
    candidates: list[int],
    config: MemoryConfig,
) -> list[int]:
    """Selection over `candidates` (indices of one document's items) alone."""
    mine = None if gaps is None else [gaps[i] for i in candidates]
    kept = select_items([items[i] for i in candidates], mine, config.selection)
    return [candidates[position] for position in kept]


def retrain(
    lm: LoadedModel,
    items: Sequence[TransferItem],
    chunks: dict[str, Chunk],
    config: MemoryConfig,
    rng: random.Random,
) -> TrainingStats:
    """Consolidate already-selected items into the (fresh) adapter, all together."""
    examples = _with_teacher_targets(lm, items, chunks, config, config.consolidation.batch_size)
    return train_student(lm, examples, config.consolidation, rng)


@sdpa_kernel(_ATTENTION_WITHOUT_CUDNN)
def retrain_together(
    lm: LoadedModel,
    groups: Sequence[Sequence[TransferItem]],
    chunks: dict[str, Chunk],
    config: MemoryConfig,
    rngs: Sequence[random.Random],
) -> tuple[list[TrainingStats], AdapterSlots]:
    """`retrain` of several groups of already-selected items at once, each group jointly
    into its own fresh slot of the returned `AdapterSlots`: one teacher pass over every
    item, then every slot trained on its own group, shuffled together, as `retrain` would
    train it alone."""
    items = [item for group in groups for item in group]
    examples = _with_teacher_targets(lm, items, chunks, config, _INFERENCE_ROWS)
    training, start = [], 0
    for group in groups:
        training.append(examples[start : start + len(group)])
        start += len(group)
    slots = AdapterSlots(lm, len(groups))
    return train_slots(lm, slots, training, config.consolidation, rngs), slots


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
    lm: LoadedModel,
    items: Sequence[TransferItem],
    chunks: dict[str, Chunk],
    config: MemoryConfig,
    batch_size: int,
) -> list[Example]:
    examples = tokenize_items(lm, items, chunks)
    compute_teacher_targets(lm, examples, config.consolidation.teacher_top_k, batch_size)
    return examples


def _perplexity_gaps(
    lm: LoadedModel, examples: list[Example], batch_size: int, config: MemoryConfig
) -> list[float] | None:
    """Each example's answer NLL without its chunk minus with it; None when the selection
    would keep the same items whatever the gaps."""
    if not config.selection.ranks_by_gap:
        return None
    without_chunk = student_nll(lm, examples, batch_size)
    return [nll - e.teacher_nll for nll, e in zip(without_chunk, examples, strict=True)]


def _gap(gaps: list[float] | None, index: int) -> float | None:
    return None if gaps is None else gaps[index]
