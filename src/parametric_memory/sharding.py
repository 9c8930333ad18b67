"""Which adapter shard each new document goes into, and which process consolidates which
shard when several GPUs share an ingest.

Documents fill the newest shard up to `documents_per_shard`, then open a new one, in the
order they are given (with a shard per document, the memory gives them fewest chunks
first). A shard's weights depend only on its own documents (and on the transfer items of
the documents it already holds), so shards can be consolidated in parallel and give the
memory one process would."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence, Set

from .records import Chunk, Document, TransferItem
from .store import DocumentRecord


def plan_shards(
    held: Mapping[str, DocumentRecord],
    new: Sequence[Document],
    per_shard: int | None,
    closed: Set[int] = frozenset(),
    sections: Callable[[Document], int] = lambda document: 1,
) -> dict[int, list[Document]]:
    """The new documents of each shard, in ingest order. `closed` shards (compacted ones)
    take no new document: one that is newest makes the next document open a shard. With a
    shard per document, a long document takes a shard for each of its `sections` to
    consolidate, in order."""
    newest = max((shard for record in held.values() for shard in record.shards), default=0)
    filled = sum(newest in record.shards for record in held.values())
    if newest in closed:
        newest, filled = newest + 1, 0
    plan: dict[int, list[Document]] = {}
    for document in new:
        for _ in range(sections(document) if per_shard == 1 else 1):
            if per_shard is not None and filled >= per_shard:
                newest, filled = newest + 1, 0
            plan.setdefault(newest, []).append(document)
            filled += 1
    return plan


def items_of_shard(
    shard: int,
    items: Sequence[TransferItem],
    chunks: Mapping[str, Chunk],
    documents: Mapping[str, DocumentRecord],
) -> list[TransferItem]:
    """The transfer items whose chunk is in `shard` (by `documents`' records)."""
    return [i for i in items if _shard_of(chunks[i.chunk_id], documents) == shard]


def _shard_of(chunk: Chunk, documents: Mapping[str, DocumentRecord]) -> int:
    return documents[chunk.document_id].shard_of_chunk(chunk.index)


def balance_shards(plan: Mapping[int, Sequence[Document]], workers: int) -> list[list[int]]:
    """The shards each of `workers` consolidates: largest first, each to the least loaded
    worker (by characters to ingest), so the slowest worker finishes as early as it can."""
    loads = [0] * workers
    assigned: list[list[int]] = [[] for _ in range(workers)]
    by_size = sorted(plan, key=lambda shard: (-sum(len(d.text) for d in plan[shard]), shard))
    for shard in by_size:
        worker = loads.index(min(loads))
        assigned[worker].append(shard)
        loads[worker] += sum(len(d.text) for d in plan[shard])
    return [sorted(shards) for shards in assigned]


def group_shards(
    shards: Sequence[int], fits_together: Callable[[int], bool], width: int
) -> list[tuple[bool, list[int]]]:
    """The order to consolidate `shards` in: runs of shards that `fits_together` in groups of
    up to `width`, marked True (consolidated at once), and every other shard alone, marked
    False. Ingest order is kept."""
    groups: list[tuple[bool, list[int]]] = []
    for shard in shards:
        together = width > 1 and fits_together(shard)
        last = groups[-1] if groups else None
        if together and last is not None and last[0] and len(last[1]) < width:
            last[1].append(shard)
        else:
            groups.append((together, [shard]))
    return groups
