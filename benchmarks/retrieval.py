"""BM25 (the `bm25s` library) over a benchmark's passages, for the retrieval-augmented row:
the same words (stemmed, stopwords out) as the memory's router, so the two compare fairly."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

# imported from the router, which imports bm25s without JAX grabbing the GPU
from parametric_memory.routing import bm25s, tokenize

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG


def rank_passages(passages: Sequence[str], queries: Sequence[str], k: int) -> list[list[int]]:
    """For each query, the indices of its `k` best passages by BM25 score, best first; equal
    scores (a query sharing no word with any passage) keep the passages' order."""
    index = bm25s.BM25()
    index.index(_words(passages), show_progress=False)
    k = min(k, len(passages))
    ranked = []
    for query_words in _words(queries):
        scores = index.get_scores(query_words) if query_words else np.zeros(len(passages))
        ranked.append([int(i) for i in np.argsort(-scores, kind="stable")[:k]])
    return ranked


def _words(texts: Sequence[str]) -> list[list[str]]:
    return tokenize(texts, return_ids=False)
