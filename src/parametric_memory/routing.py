"""Query routing: which adapter shard holds what a question asks about.

BM25 (the `bm25s` library) over the held chunks picks the shard of the best-matching chunk.
Words are Snowball-stemmed (PyStemmer), so "harvested" in a question matches "harvests" in a
chunk. Routing only chooses *weights*: no retrieved text ever enters the model's prompt.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import Stemmer

from .records import Chunk

_STOPWORDS = "en"
_STEMMER = Stemmer.Stemmer("english")
_NO_WORDS = "\u2400"
"""The one token of a chunk with no indexable words ("To be or not to be.", "1 2 3"): bm25s
cannot index a corpus without a token. `tokenize` never yields it (it is no word
character), so no query matches it and such a chunk's shard is chosen only as fallback."""


def _import_bm25s_without_jax() -> ModuleType:
    # bm25s probes JAX when imported; on a GPU machine that starts JAX's CUDA backend, which
    # reserves most of the GPU's memory. Top-k over a memory's chunks needs no JAX.
    if "jax" in sys.modules:
        return importlib.import_module("bm25s")
    blocked = {name: sys.modules.get(name) for name in ("jax", "jax.lax")}
    sys.modules.update(dict.fromkeys(blocked))
    try:
        return importlib.import_module("bm25s")
    finally:
        for name in blocked:
            del sys.modules[name]


bm25s = _import_bm25s_without_jax()

_CHUNKS_PER_SHARD_RANKED = 8
"""Chunks retrieved per shard wanted: a shard of many chunks may fill several of the top
places, so k shards are looked for among the best 8k chunks."""


@dataclass(frozen=True)
class RankedShard:
    """A shard the router found for a query: its best chunk's BM25 score and text."""

    shard: int
    score: float
    chunk: str
    """The best-matching chunk's text; empty where no chunk shares a word with the query."""


def composition_weights(ranked: Sequence[tuple[int, float]], mode: str) -> list[tuple[int, float]]:
    """Each ranked shard's weight in a question's sum of updates (`RoutingConfig.weights`):
    "equal", 1 each; "relative", its BM25 score over the highest of them (that one gets 1)."""
    top = max(score for _, score in ranked)
    if mode == "equal" or top <= 0:
        return [(shard, 1.0) for shard, _ in ranked]
    return [(shard, score / top) for shard, score in ranked]


class ShardRouter:
    """A BM25 index over chunks, each labelled with the shard and document it belongs to:
    its document's shard, or where `shard_of_chunk` names one (a long document's section),
    that one."""

    def __init__(
        self,
        chunks: Sequence[Chunk],
        shard_of_document: Mapping[str, int],
        shard_of_chunk: Mapping[str, int] | None = None,
    ) -> None:
        sections = shard_of_chunk or {}
        self._chunks = [c for c in chunks if c.document_id in shard_of_document]
        self._shards = [sections.get(c.id, shard_of_document[c.document_id]) for c in self._chunks]
        self._fallback = max([*shard_of_document.values(), *sections.values()], default=0)
        self._index: bm25s.BM25 | None = None
        if self._chunks:
            self._index = bm25s.BM25()
            words = tokenize([c.text for c in self._chunks], return_ids=False)
            self._index.index([w or [_NO_WORDS] for w in words], show_progress=False)

    def shards_for(self, queries: Sequence[str]) -> list[int]:
        """The shard of each query's best-matching chunk; the newest shard where no chunk
        shares a word with the query."""
        if len(set(self._shards)) <= 1:
            return [self._shards[0] if self._shards else self._fallback] * len(queries)
        best, scores = self._top(queries, k=1)
        return [
            self._shards[int(row[0])] if score[0] > 0 else self._fallback
            for row, score in zip(best, scores, strict=True)
        ]

    def ranked_shards(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """Up to `k` shards per query, best first, each with the BM25 score of its
        best-matching chunk; the newest shard alone (score 0) where no chunk shares a word
        with the query."""
        return [[(r.shard, r.score) for r in row] for row in self.ranked_chunks(queries, k)]

    def ranked_chunks(self, queries: Sequence[str], k: int) -> list[list[RankedShard]]:
        """`ranked_shards` with each shard's best-matching chunk: what a re-ranker reads."""
        if self._index is None or len(set(self._shards)) <= 1:
            only = self._shards[0] if self._shards else self._fallback
            return [[RankedShard(only, 1.0, "")] for _ in queries]
        best, scores = self._top(queries, k=k * _CHUNKS_PER_SHARD_RANKED)
        ranked = []
        for row, row_scores in zip(best, scores, strict=True):
            mine: dict[int, RankedShard] = {}
            for index, score in zip(row, row_scores, strict=True):
                shard = self._shards[int(index)]
                if score > 0 and shard not in mine and len(mine) < k:
                    mine[shard] = RankedShard(shard, float(score), self._chunks[int(index)].text)
            ranked.append(list(mine.values()) or [RankedShard(self._fallback, 0.0, "")])
        return ranked

    def documents_for(self, text: str, limit: int) -> list[str]:
        """Held documents ranked by their best chunk's BM25 match with `text`."""
        if self._index is None:
            return []
        best, scores = self._top([text], k=limit * 8)
        ranked: list[str] = []
        for index, score in zip(best[0], scores[0], strict=True):
            document = self._chunks[int(index)].document_id
            if score > 0 and document not in ranked:
                ranked.append(document)
        return ranked[:limit]

    def _top(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self._index is not None
        k = min(k, len(self._chunks))
        return self._index.retrieve(
            tokenize(list(queries)), k=k, show_progress=False, backend_selection="numpy"
        )


def tokenize(texts: Sequence[str], *, return_ids: bool = True):
    """Lower-cased, stemmed words less English stopwords, as bm25s indexes and queries them."""
    return bm25s.tokenize(
        list(texts),
        stopwords=_STOPWORDS,
        stemmer=_STEMMER.stemWords,
        return_ids=return_ids,
        show_progress=False,
    )
