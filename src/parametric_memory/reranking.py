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

import re
from collections.abc import Sequence

from .engine.likelihood import continuation_log_likelihoods
from .engine.models import LoadedModel
from .method.prompts import question_likelihood_pair
from .routing import RankedShard, tokenize

_PAIRS_AT_ONCE = 48
"""Chunk-question pairs in one forward pass (chunks are up to a few hundred tokens)."""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def reranked(
    lm: LoadedModel,
    questions: Sequence[str],
    ranked: Sequence[Sequence[RankedShard]],
    bm25_weight: float,
    words: int = 0,
    clear_margin: float | None = None,
) -> list[list[tuple[int, float]]]:
    """Each question's shards, best first by `rerank_score`, each with its BM25 score. A
    question with one candidate keeps it, unscored, as does one whose BM25 first candidate
    is `bm25_is_clear` by `clear_margin`. `words`: see `question_likelihoods`."""
    read = [[] if bm25_is_clear(row, clear_margin) else row for row in ranked]
    return ordered(ranked, question_likelihoods(lm, questions, read, words), bm25_weight)


def bm25_is_clear(row: Sequence[RankedShard], margin: float | None) -> bool:
    """Whether BM25's first candidate scores at least `margin` times its second (None:
    never): a first shard that far ahead is nearly always the one that holds the question's
    passage, so the model need not read the candidates."""
    return margin is not None and len(row) > 1 and row[0].score >= margin * row[1].score


def question_likelihoods(
    lm: LoadedModel,
    questions: Sequence[str],
    ranked: Sequence[Sequence[RankedShard]],
    words: int = 0,
) -> list[list[float]]:
    """The question's mean log-probability after each candidate's chunk (its
    `question_window` of `words` words; 0: all of it), for every question with more than
    one candidate (an empty list for the others)."""
    pairs = [
        question_likelihood_pair(_read(candidate.chunk, question, words), question)
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


def _read(chunk: str, question: str, words: int) -> str:
    return question_window(chunk, question, words) if words else chunk


def question_window(chunk: str, question: str, words: int) -> str:
    """The part of `chunk` of at most `words` words the re-ranker reads: the sentence sharing
    the most of the question's stemmed words, then its neighbours, after it first, while they
    fit. The forward pass costs what the text's length does, and the sentence that answers a
    question is where its likelihood is decided."""
    sentences = [s for s in _SENTENCE_END.split(chunk.strip()) if s]
    if not sentences or len(chunk.split()) <= words:
        return chunk
    wanted = set(tokenize([question], return_ids=False)[0])
    stems = tokenize(sentences, return_ids=False)
    best = max(range(len(sentences)), key=lambda i: (len(wanted & set(stems[i])), -i))
    first, last = best, best
    used = len(sentences[best].split())
    for index in _neighbours(best, len(sentences)):
        size = len(sentences[index].split())
        if used + size > words:
            break
        used += size
        first, last = min(first, index), max(last, index)
    text = " ".join(sentences[first : last + 1])
    return " ".join(text.split()[:words])


def _neighbours(centre: int, count: int) -> list[int]:
    """Sentence indices by distance from `centre`, the one after before the one before."""
    order = []
    for step in range(1, count):
        order += [i for i in (centre + step, centre - step) if 0 <= i < count]
    return order
