"""Which documents a compaction consolidates together: groups of related documents, so that
the router, which picks a shard by its best-matching chunk, lands on the shard holding the
answer more often than it lands on the single document that does.

Relatedness is the router's own measure: BM25 over the same stemmed words. Each document's
text is a query against all the documents; its score on another, divided by its score on
itself, is how much of it the other covers. Groups grow greedily around a seed, taking the
document most related to the group so far, so each group is as tight as the rest allow and
every group but the last has exactly `size` documents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from .routing import bm25s, tokenize

_NEIGHBOURS_PER_SIZE = 3
"""Nearest documents looked up per document, as a multiple of the group size."""


def group_related(texts: Mapping[str, str], size: int) -> list[list[str]]:
    """The ids of `texts` in groups of `size` (the last may be smaller), related documents
    together; ids keep their given order within the seeding (deterministic)."""
    if size < 1:
        raise ValueError(f"group size must be at least 1, got {size}")
    ids = list(texts)
    if len(ids) <= size:
        return [ids] if ids else []
    related = _relatedness(ids, [texts[i] for i in ids], size * _NEIGHBOURS_PER_SIZE)
    return _grow_groups(ids, related, size)


def _relatedness(ids: list[str], texts: list[str], neighbours: int) -> dict[str, Counter]:
    """For each document, its nearest others with a symmetric score in [0, 2]."""
    tokens = tokenize(texts)
    index = bm25s.BM25()
    index.index(tokens, show_progress=False)
    k = min(neighbours + 1, len(ids))
    found, scores = index.retrieve(tokens, k=k, show_progress=False, backend_selection="numpy")
    related: dict[str, Counter] = {i: Counter() for i in ids}
    for row, (hits, values) in enumerate(zip(found, scores, strict=True)):
        own = _own_score(row, hits, values)
        if own <= 0:
            continue  # no indexable word: related to nothing
        for hit, value in zip(hits, values, strict=True):
            other = int(hit)
            if other != row and value > 0:
                related[ids[row]][ids[other]] += float(value) / own
                related[ids[other]][ids[row]] += float(value) / own
    return related


def _own_score(row: int, hits: Sequence, values: Sequence) -> float:
    """A document's BM25 score on itself (its best possible match); the top score where it
    is not among its own hits (ties)."""
    for hit, value in zip(hits, values, strict=True):
        if int(hit) == row:
            return float(value)
    return float(max(values, default=0.0))


def _grow_groups(ids: list[str], related: dict[str, Counter], size: int) -> list[list[str]]:
    unassigned = dict.fromkeys(ids)  # an ordered set
    groups: list[list[str]] = []
    for seed in ids:
        if seed not in unassigned:
            continue
        del unassigned[seed]
        group, affinity = [seed], Counter(related[seed])
        while len(group) < size and unassigned:
            best = _most_related(affinity, unassigned) or next(iter(unassigned))
            del unassigned[best]
            group.append(best)
            affinity.update(related[best])
        groups.append(group)
    return groups


def _most_related(affinity: Counter, unassigned: dict[str, None]) -> str | None:
    candidates = [(score, doc) for doc, score in affinity.items() if doc in unassigned]
    return max(candidates, key=lambda pair: pair[0])[1] if candidates else None
