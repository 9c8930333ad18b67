"""Re-ranking the router's candidate shards with the base model (`RoutingConfig.rerank`).

BM25 often ranks a wrong shard first while the one that holds a question's passage is among
its next few, and a question routed to the wrong shard is almost always answered wrong. The
base model reads better than BM25 counts words: how likely it finds the question after each
candidate's best chunk (query likelihood, as UPR re-ranks passages, Sachan et al. 2022)
tells the answering passage from one that merely shares its words. That costs a forward
pass over the candidates' chunks, with no decoding, and no text ever enters the answering
prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from .engine.likelihood import continuation_log_likelihoods
from .engine.models import LoadedModel
from .method.prompts import question_likelihood_pair
from .routing import RankedShard

_PAIRS_AT_ONCE = 48
"""Chunk-question pairs in one forward pass (chunks are up to a few hundred tokens)."""


def reranked(
    lm: LoadedModel,
    questions: Sequence[str],
    ranked: Sequence[Sequence[RankedShard]],
    bm25_weight: float,
) -> list[list[tuple[int, float]]]:
    """Each question's shards, best first by `rerank_score`, each with its BM25 score. A
    question with one candidate keeps it, unscored."""
    return ordered(ranked, question_likelihoods(lm, questions, ranked), bm25_weight)


def question_likelihoods(
    lm: LoadedModel, questions: Sequence[str], ranked: Sequence[Sequence[RankedShard]]
) -> list[list[float]]:
    """The question's mean log-probability after each candidate's chunk, for every question
    with more than one candidate (an empty list for the others)."""
    pairs = [
        question_likelihood_pair(candidate.chunk, question)
        for question, row in zip(questions, ranked, strict=True)
        if len(row) > 1
        for candidate in row
    ]
    flat = iter(continuation_log_likelihoods(lm, pairs, _PAIRS_AT_ONCE))
    return [[next(flat) for _ in row] if len(row) > 1 else [] for row in ranked]


def ordered(
    ranked: Sequence[Sequence[RankedShard]],
    likelihoods: Sequence[Sequence[float]],
    bm25_weight: float,
) -> list[list[tuple[int, float]]]:
    """Each row of candidates sorted by `rerank_score` (rows without likelihoods as they
    are), as (shard, BM25 score)."""
    result = []
    for row, scores in zip(ranked, likelihoods, strict=True):
        if scores:
            top = max(candidate.score for candidate in row)
            combined = [
                rerank_score(likelihood, candidate.score, top, bm25_weight)
                for likelihood, candidate in zip(scores, row, strict=True)
            ]
            row = [row[i] for i in sorted(range(len(row)), key=lambda i: -combined[i])]
        result.append([(candidate.shard, candidate.score) for candidate in row])
    return result


def rerank_score(likelihood: float, bm25: float, best_bm25: float, bm25_weight: float) -> float:
    """The question's mean log-probability after the chunk, plus `bm25_weight` times the
    chunk's BM25 score over the best candidate's: the model decides, BM25 breaks near-ties."""
    return likelihood + bm25_weight * (bm25 / best_bm25 if best_bm25 > 0 else 0.0)
