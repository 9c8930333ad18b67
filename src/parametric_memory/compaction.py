"""Compaction: level-0 shards (each new document consolidated alone, answerable at once)
re-consolidated in groups of related documents (`grouping.group_related`), each group
jointly — all its documents' kept transfer items shuffled together, from a fresh adapter —
into one shard. Nothing is trained sequentially and no weights are merged: one adapter
trained jointly on many documents' transfer sets holds what each document's own adapter
held, while sequential training overwrites.

Each batch of groups is committed atomically: its new shards replace its documents'
level-0 shards in one manifest write, so readers see either the old shards or the new ones,
and a crash loses at most the batch in progress. Compacted shards are never trained again
but by `forget` (which retrains the affected shard from its other documents' items)."""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from . import store
from .config import CompactionConfig, MemoryConfig
from .engine.adapter_files import adapter_config_json, adapter_writes, save_adapter
from .grouping import group_related
from .ingest import MemoryWriter
from .method.consolidate import reset_adapter
from .method.transformation import retrain, retrain_together
from .records import Chunk, CompactionReport, TransferItem, batches

logger = logging.getLogger(__name__)


def level_zero(manifest: store.Manifest) -> dict[str, store.DocumentRecord]:
    """The documents not yet compacted, in the manifest's order. A long document's sections
    are shards of many chunks already: compaction leaves them as they are."""
    compacted = set(manifest.compacted_shards)
    return {
        doc: rec
        for doc, rec in manifest.documents.items()
        if not rec.sections and rec.shard not in compacted
    }


def shard_count(manifest: store.Manifest) -> int:
    return len({shard for record in manifest.documents.values() for shard in record.shards})


class Compaction:
    """Compacts `memory`'s level-0 documents; the caller holds the write lock."""

    def __init__(self, memory: MemoryWriter, settings: CompactionConfig | None = None) -> None:
        self.memory = memory
        self.config: MemoryConfig = memory.manifest.config
        self.settings = settings or self.config.compaction
        self.training_config = self.config.model_copy(
            update={"consolidation": self.settings.training(self.config.consolidation)}
        )

    def run(self, progress: bool = True) -> CompactionReport:
        started = time.perf_counter()
        chunk_records, items = self.memory.refresh()
        manifest = self.memory.manifest
        report = CompactionReport(shards_before=shard_count(manifest))
        candidates = level_zero(manifest)
        if len(candidates) >= 2:
            chunks = {chunk.id: chunk for chunk in chunk_records}
            groups = self._plan(candidates, chunk_records)
            width = max(1, self.memory.lm.backend.documents_together)
            bar = tqdm(
                total=len(candidates), desc="compacting", unit="doc", disable=_bar_off(progress)
            )
            with bar:
                for batch in batches(groups, width):
                    self._compact(batch, chunks, items)
                    bar.update(sum(len(group) for group in batch))
            report.groups = groups
        report.shards_after = shard_count(self.memory.manifest)
        report.seconds = time.perf_counter() - started
        return report

    def _plan(
        self, candidates: dict[str, store.DocumentRecord], chunks: Sequence[Chunk]
    ) -> list[list[str]]:
        pieces: dict[str, list[Chunk]] = {doc: [] for doc in candidates}
        for chunk in chunks:
            if chunk.document_id in pieces:
                pieces[chunk.document_id].append(chunk)
        texts = {
            doc: "\n".join(c.text for c in sorted(found, key=lambda c: c.index))
            for doc, found in pieces.items()
        }
        return group_related(texts, self.settings.documents_per_shard)

    def _compact(
        self, groups: list[list[str]], chunks: dict[str, Chunk], items: list[TransferItem]
    ) -> None:
        """Consolidate `groups` into new shards and commit them in place of their documents'
        level-0 shards."""
        manifest = self.memory.manifest
        first = max((s for r in manifest.documents.values() for s in r.shards), default=-1) + 1
        shards = list(range(first, first + len(groups)))
        staging = store.staging_folder(self.memory.root)
        try:
            self._consolidate(groups, chunks, items, staging, shards)
            self._commit(groups, shards, staging, chunks, items)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _consolidate(
        self,
        groups: list[list[str]],
        chunks: dict[str, Chunk],
        items: list[TransferItem],
        staging: Path,
        shards: list[int],
    ) -> None:
        lm, config = self.memory.lm, self.training_config
        group_of = {doc: index for index, group in enumerate(groups) for doc in group}
        group_items: list[list[TransferItem]] = [[] for _ in groups]
        for item in items:
            index = group_of.get(chunks[item.chunk_id].document_id)
            if index is not None:
                group_items[index].append(item)
        rngs = [random.Random(f"{config.seed}:compact:{group[0]}") for group in groups]
        folders = [staging / store.shard_dir(shard) for shard in shards]
        self.memory.adapter_holds(None)  # the adapter is about to hold uncommitted weights
        reset_adapter(lm, config.seed)
        if len(groups) > 1 and lm.backend.documents_together > 1:
            _, slots = retrain_together(lm, group_items, chunks, config, rngs)
            stored = config.consolidation.adapter_dtype
            adapter_writes(folders, adapter_config_json(lm.model), slots, stored)()
            return
        for kept, rng, folder in zip(group_items, rngs, folders, strict=True):
            reset_adapter(lm, config.seed)
            retrain(lm, kept, chunks, config, rng)
            save_adapter(lm.model, folder, config.consolidation.adapter_dtype)

    def _commit(
        self,
        groups: list[list[str]],
        shards: list[int],
        staging: Path,
        chunks: dict[str, Chunk],
        items: list[TransferItem],
    ) -> None:
        manifest = self.memory.manifest
        documents = dict(manifest.documents)
        for group, shard in zip(groups, shards, strict=True):
            for doc in group:
                documents[doc] = documents[doc].model_copy(update={"shard": shard})

        def write_state(folder: Path) -> None:
            for shard in shards:
                target = folder / store.shard_dir(shard)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(staging / store.shard_dir(shard), target)
            self.memory.write_records(folder, chunks, items)

        compacted = sorted(set(manifest.compacted_shards) | set(shards))
        self.memory.commit_state(
            documents, set(shards), write_state, {"compacted_shards": compacted}
        )
        logger.info("compacted %d documents into shards %s", sum(map(len, groups)), shards)


def _bar_off(progress: bool) -> bool | None:
    """tqdm's `disable`: off when not asked for, and (None) off when stderr is not a
    terminal, where every redrawn frame would be one more line of a log."""
    return None if progress else True
