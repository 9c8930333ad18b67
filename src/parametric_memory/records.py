"""The plain data every layer shares: documents, chunks, transfer items, tokenised examples
and training statistics. Nothing here loads or runs a model, so the store, the verifier and
the router read records without importing torch or transformers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def content_hash(text: str) -> str:
    """The sha256 of a document's text: what decides whether a memory already holds it."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Chunk:
    id: str
    document_id: str
    index: int
    text: str
    tokens: int


@dataclass
class TransferItem:
    chunk_id: str
    kind: str
    prompt: str
    """What the student sees (no chunk)."""
    answer: str
    perplexity_gap: float | None = None
    """Mean answer NLL without the chunk minus with it (nats/token); set by selection."""


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


@dataclass
class Example:
    """One transfer item, tokenised for both sides, with its teacher targets."""

    item: TransferItem
    student_ids: list[int]
    teacher_prefix_ids: list[int]
    """The teacher's prompt up to and including the chunk: shared by all of a chunk's items,
    so its KV cache is computed once per chunk."""
    teacher_suffix_ids: list[int]
    answer_len: int
    """Answer tokens (including the end token) at the end of student and suffix ids."""

    @property
    def teacher_ids(self) -> list[int]:
        return self.teacher_prefix_ids + self.teacher_suffix_ids

    topk_ids: torch.Tensor | None = None
    """[answer_len, k] token ids of the teacher's top-k at each answer position (CPU)."""
    topk_logprobs: torch.Tensor | None = None
    """[answer_len, k] teacher log-probabilities of those tokens (CPU, float32)."""
    teacher_nll: float | None = None
    """Mean NLL of the answer under the teacher, nats per token."""


@dataclass
class TrainingStats:
    steps: int
    first_loss: float
    last_loss: float
    skipped_steps: int = 0
    """Steps whose gradient was not finite: the optimiser left the weights as they were."""


def batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class CompactionReport:
    groups: list[list[str]] = field(default_factory=list)
    """The document ids of each new shard, in shard order."""
    shards_before: int = 0
    shards_after: int = 0
    seconds: float = 0.0
