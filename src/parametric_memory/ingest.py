"""One call's documents written into a memory: planned against the committed state, then
consolidated shard by shard (or, for fresh one-document shards on a GPU, many at once) and
committed. `ParametricMemory.add_documents` runs an `Ingest` on one process; `distributed`
runs the same plan over several and commits once."""

from __future__ import annotations

import functools
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from . import store
from .engine.adapter_files import adapter_config_json, adapter_writes, save_adapter
from .engine.background_writes import BackgroundWrites
from .engine.models import LoadedModel
from .errors import InvalidDocumentError
from .ingest_progress import IngestBar, reporting_to
from .method.chunking import chunk_document, section_starts
from .method.consolidate import reset_adapter
from .method.transformation import transform, transform_fresh_documents
from .records import Chunk, CompactionReport, Document, TransferItem, batches
from .sharding import group_shards, items_of_shard, plan_shards

logger = logging.getLogger(__name__)


class MemoryWriter(Protocol):
    """What an ingest needs of the memory it writes into, and all it may touch:
    `ParametricMemory.writer()` provides it, holding the write lock's side of the memory."""

    @property
    def root(self) -> Path: ...

    @property
    def manifest(self) -> store.Manifest:
        """The committed manifest this writer last read or wrote."""
        ...

    @property
    def lm(self) -> LoadedModel: ...

    def refresh(self, *, writer: bool = True) -> tuple[list[Chunk], list[TransferItem]]:
        """Pick up commits made elsewhere; the committed chunk and transfer-item records."""
        ...

    def activate(self, shard: int) -> None:
        """Load `shard`'s committed weights into the adapter (fresh ones for a new shard)."""
        ...

    def adapter_holds(self, shard: int | None) -> None:
        """Record which committed shard the adapter now holds (None: uncommitted weights)."""
        ...

    def commit(
        self,
        documents: dict[str, store.DocumentRecord],
        changed_shard: int | None,
        chunks: dict[str, Chunk],
        items: list[TransferItem],
    ) -> None:
        """Commit `documents` with the adapter's weights as `changed_shard`."""
        ...

    def commit_state(
        self,
        documents: dict[str, store.DocumentRecord],
        changed_shards: set[int],
        write_state: Callable[[Path], None],
        updates: dict | None = None,
    ) -> None:
        """Commit a state whose changed shards and records `write_state` writes; `updates`:
        other manifest fields the commit changes."""
        ...

    def write_records(
        self, folder: Path, chunks: dict[str, Chunk], items: list[TransferItem]
    ) -> None: ...


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    """Ids of the documents added, in the order they were given."""
    skipped: list[str] = field(default_factory=list)
    """Ids of documents whose content the memory already held (a no-op)."""
    chunks: int = 0
    transfer_items: int = 0
    compaction: CompactionReport | None = None
    """What the compaction this ingest set off did, if it set one off."""

    def count(self, document_id: str, chunks: list[Chunk], items: list[TransferItem]) -> None:
        if document_id not in self.added:  # a long document is counted once per section
            self.added.append(document_id)
        self.chunks += len(chunks)
        self.transfer_items += len(items)

    def list_in_given_order(self, documents: Sequence[Document]) -> None:
        """Sort `added` as `documents` were given (the plan may consolidate them in another
        order)."""
        position = {document.id: index for index, document in enumerate(documents)}
        self.added.sort(key=position.__getitem__)


@dataclass
class ShardResult:
    """What consolidating new documents into one shard produced, not yet committed."""

    shard: int
    records: dict[str, store.DocumentRecord] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    items: list[TransferItem] = field(default_factory=list)


class Ingest:
    """`documents` planned into `memory`'s shards against its committed state (picked up
    afresh; `writer` False leaves stale folders to the process holding the write lock).
    Documents already held go to the report as skipped."""

    def __init__(
        self, memory: MemoryWriter, documents: list[Document], *, writer: bool = True
    ) -> None:
        self.memory = memory
        self.documents = documents
        self.config = memory.manifest.config
        chunk_records, self.held_items = memory.refresh(writer=writer)
        self.held_chunks = {chunk.id: chunk for chunk in chunk_records}
        """Every committed chunk; the held records take in each commit's new ones."""
        self.report = IngestReport()
        self._chunks_of: dict[tuple[str, str], list[Chunk]] = {}
        """The new documents' chunks, by (id, content hash): planning, grouping and
        consolidation each need them."""
        todo = self._new_documents(documents)
        per_shard = self.config.sharding.documents_per_shard
        if per_shard == 1:
            todo = self._fewest_chunks_first(todo)
        closed = set(memory.manifest.compacted_shards)
        self.shards = plan_shards(
            memory.manifest.documents, todo, per_shard, closed, self._sections_to_consolidate
        )
        """The new documents of each shard, in the order they are consolidated."""
        self._sections = self._planned_sections()
        """Each shard that takes one section of a long document: the section's number."""
        self._bar = IngestBar(0, 0, show=False)
        """Where the transformations under way are shown (`run` shows one)."""

    def new_documents(self) -> list[Document]:
        planned = [document for documents in self.shards.values() for document in documents]
        return list({document.id: document for document in planned}.values())

    def run(self, progress: bool) -> IngestReport:
        """Consolidate every planned document, committing after each one (after each group,
        for fresh shards consolidated together: its files are written and committed in the
        background while the next group is consolidated)."""
        units = [(shard, document) for shard, docs in self.shards.items() for document in docs]
        chunks = sum(len(self._chunks_in(shard, document)) for shard, document in units)
        self._bar = IngestBar(chunks, len(self.new_documents()), progress)
        held_by_adapter = None
        with self._bar, reporting_to(self.memory.lm, self._bar), BackgroundWrites() as writes:
            for together, shards in self._work_order(list(self.shards)):
                if together:
                    self._add_together(shards, writes)
                    held_by_adapter = shards[-1]
                    self._bar.committed(self._documents_finished(shards))
                    continue
                writes.wait()  # a together group's commit lands before this shard's
                held_by_adapter = None
                self.memory.activate(shards[0])
                for document in self.shards[shards[0]]:
                    self._add_document(document, shards[0])
                    self._bar.committed(int(self._finishes(shards[0], document)))
            writes.wait()
        if held_by_adapter is not None:  # committed now: the adapter holds its weights
            self.memory.adapter_holds(held_by_adapter)
        self.report.list_in_given_order(self.documents)
        return self.report

    def consolidate_uncommitted(
        self, shards: list[int], folder: Path, bar: tqdm
    ) -> list[ShardResult]:
        """Consolidate the planned documents of `shards`, saving each shard's weights under
        `folder` and committing nothing (a multi-GPU ingest commits every shard at once)."""
        results: list[ShardResult] = []
        with BackgroundWrites() as writes:
            for together, group in self._work_order(shards):
                if together:
                    group_results, write = self._consolidate_together(group, folder)
                    writes.submit(write)
                    results += group_results
                else:
                    results.append(self._consolidate_shard(group[0], folder))
                bar.update(sum(len(self.shards[shard]) for shard in group))
        return results

    def commit_results(self, results: list[ShardResult], staging: Path) -> None:
        """Commit every shard's new documents at once, in shard order, with the weights
        saved under `staging`; the held records take in the new ones."""
        documents = dict(self.memory.manifest.documents)
        for result in sorted(results, key=lambda result: result.shard):
            for document_id, record in result.records.items():
                documents[document_id] = _with_section(documents.get(document_id), record)
            self.held_chunks.update({chunk.id: chunk for chunk in result.chunks})
            self.held_items.extend(result.items)
        changed = {result.shard for result in results}

        def write_state(folder: Path) -> None:
            for shard in changed:  # moved, not copied: staging is on the memory's filesystem
                target = folder / store.shard_dir(shard)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / store.shard_dir(shard), target)
            self.memory.write_records(folder, self.held_chunks, self.held_items)

        self.memory.commit_state(documents, changed, write_state)

    # --- planning -----------------------------------------------------------------------
    def _new_documents(self, documents: list[Document]) -> list[Document]:
        held = self.memory.manifest.documents
        held_hashes = {record.content_hash for record in held.values()}
        todo, seen = [], set()
        for document in documents:
            record = held.get(document.id)
            resumed = record is not None and record.content_hash == document.content_hash
            if resumed and not record.complete and document.content_hash not in seen:
                todo.append(document)  # a long document whose ingest was interrupted
                seen.add(document.content_hash)
            elif document.content_hash in held_hashes or document.content_hash in seen:
                self.report.skipped.append(document.id)
            elif document.id in held:
                raise InvalidDocumentError(
                    f"the memory already holds a different document with id {document.id!r}; "
                    "delete it first (delete_document / `forget`) to replace it"
                )
            else:
                todo.append(document)
                seen.add(document.content_hash)
        return todo

    def _fewest_chunks_first(self, documents: list[Document]) -> list[Document]:
        """One-document shards are planned in order of chunk count, then length. Shards
        consolidated together take as many steps as the longest document among them, and a
        document of two chunks takes twice the steps of one: in ingest order, every group of
        128 of the first 1,048 SQuAD passages held 3-35 longer ones, and the others sat out
        half its steps. Each shard's weights depend on its own document only, so the order
        changes no weights."""
        return sorted(documents, key=lambda d: (len(self._chunk(d)), len(d.text)))

    def _work_order(self, shards: list[int]) -> list[tuple[bool, list[int]]]:
        """`shards` grouped as `sharding.group_shards` does: fresh shards of one document
        that fits one transformation are consolidated together, the others one by one."""
        width = self.config.sharding.shards_in_parallel
        if width is None:
            width = self.memory.lm.backend.documents_together
        limit = self.config.consolidation.chunks_per_transformation

        def fits_together(shard: int) -> bool:
            documents = self.shards[shard]
            return (
                len(documents) == 1
                and store.shard_weights(self.memory.root, self.memory.manifest, shard) is None
                and len(self._chunks_in(shard, documents[0])) <= limit
            )

        return group_shards(shards, fits_together, width)

    def _chunk(self, document: Document) -> list[Chunk]:
        key = (document.id, document.content_hash)
        if key not in self._chunks_of:
            tokenizer = self.memory.lm.tokenizer
            self._chunks_of[key] = chunk_document(
                document.id,
                document.content_hash,
                document.text,
                self.config.chunking.chunk_tokens,
                lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
            )
        return self._chunks_of[key]

    # --- a long document's sections -----------------------------------------------------
    def _section_starts(self, document: Document) -> list[int]:
        """Where the document's sections begin: a shard per document cuts one longer than a
        transformation into sections of consecutive chunks (`chunking.section_starts`),
        each consolidated into a shard of its own, never a long chain in one adapter."""
        chunks = self._chunk(document)
        limit = self.config.consolidation.chunks_per_transformation
        if self.config.sharding.documents_per_shard != 1 or len(chunks) <= limit:
            return [0]
        return section_starts([chunk.text for chunk in chunks], limit)

    def _sections_left(self, document: Document) -> list[int]:
        """The numbers of `document`'s sections not committed yet (an interrupted ingest
        committed the others)."""
        record = self.memory.manifest.documents.get(document.id)
        same = record is not None and record.content_hash == document.content_hash
        committed = {section.first_chunk for section in record.sections} if same else set()
        starts = self._section_starts(document)
        return [number for number, start in enumerate(starts) if start not in committed]

    def _sections_to_consolidate(self, document: Document) -> int:
        return len(self._sections_left(document))

    def _planned_sections(self) -> dict[int, int]:
        """Each section shard's section number, a long document's shards in order."""
        sections: dict[int, int] = {}
        left: dict[str, list[int]] = {}
        for shard in sorted(self.shards):
            document = self.shards[shard][0]
            if len(self._section_starts(document)) > 1:
                numbers = left.setdefault(document.id, self._sections_left(document))
                sections[shard] = numbers.pop(0)
        return sections

    def _documents_finished(self, shards: list[int]) -> int:
        """Documents whose last planned shard is among `shards` (a long one's last section)."""
        return sum(self._finishes(s, d) for s in shards for d in self.shards[s])

    def _finishes(self, shard: int, document: Document) -> bool:
        return self._last_shards[document.id] == shard

    @functools.cached_property
    def _last_shards(self) -> dict[str, int]:
        return {d.id: shard for shard in sorted(self.shards) for d in self.shards[shard]}

    def _chunks_in(self, shard: int, document: Document) -> list[Chunk]:
        """The chunks of `document` that `shard` consolidates: all, or one section's."""
        chunks = self._chunk(document)
        if shard not in self._sections:
            return chunks
        starts = [*self._section_starts(document), len(chunks)]
        number = self._sections[shard]
        return chunks[starts[number] : starts[number + 1]]

    def _rng(self, shard: int, document: Document) -> random.Random:
        seed = f"{self.config.seed}:{document.content_hash}"
        if shard in self._sections:
            seed += f":section {self._sections[shard]}"
        return random.Random(seed)

    def _record(
        self, shard: int, document: Document, chunks: list[Chunk], items: list[TransferItem]
    ) -> store.DocumentRecord:
        """The record of what `shard` consolidated of `document` (one section of a long one:
        `_with_section` adds it to the document's record)."""
        record = _record(document, shard, chunks, items)
        if shard not in self._sections:
            return record
        section = store.Section(first_chunk=chunks[0].index, shard=shard)
        planned = len(self._section_starts(document))
        return record.model_copy(update={"sections": [section], "sections_planned": planned})

    # --- fresh one-document shards, many at once ----------------------------------------
    def _add_together(self, shards: list[int], writes: BackgroundWrites) -> None:
        """Consolidate fresh one-document `shards` at once, then write and commit them on
        `writes`' thread; if the GPU runs out of memory for them, each half in turn."""
        staging = store.staging_folder(self.memory.root)
        out_of_memory = False
        try:
            results, write = self._consolidate_together(shards, staging)
        except BaseException as error:
            shutil.rmtree(staging, ignore_errors=True)
            if not isinstance(error, torch.OutOfMemoryError) or len(shards) == 1:
                raise
            out_of_memory = True  # retried outside this block, whose traceback holds tensors
        if out_of_memory:
            self._retry_in_halves(shards, writes)
            return

        def write_and_commit() -> None:
            try:
                write()
                started = time.perf_counter()
                self.commit_results(results, staging)
                seconds = time.perf_counter() - started
                logger.info("committed %d shards in %.1fs", len(shards), seconds)
            finally:
                shutil.rmtree(staging, ignore_errors=True)

        try:
            writes.submit(write_and_commit)
        except BaseException:  # the group before failed to commit: this one is not written
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for result in results:
            for document_id in result.records:
                self.report.count(document_id, result.chunks, result.items)

    def _retry_in_halves(self, shards: list[int], writes: BackgroundWrites) -> None:
        half = len(shards) // 2
        logger.warning(
            "out of GPU memory consolidating %d documents together; trying %d, then %d "
            "(a lower sharding.shards_in_parallel avoids the retry)",
            len(shards),
            half,
            len(shards) - half,
        )
        _release_gpu_memory()
        self._add_together(shards[:half], writes)
        self._add_together(shards[half:], writes)

    def _consolidate_together(
        self, shards: list[int], folder: Path
    ) -> tuple[list[ShardResult], Callable[[], None]]:
        """Consolidate each of `shards` (fresh, one document each) into its own slot of a
        stacked adapter at once; the weights are copied to the host, and the returned job
        saves each shard's weights under `folder`. Nothing is committed."""
        config, lm = self.config, self.memory.lm
        documents = [self.shards[shard][0] for shard in shards]
        chunks = [self._chunks_in(s, d) for s, d in zip(shards, documents, strict=True)]
        rngs = [self._rng(s, d) for s, d in zip(shards, documents, strict=True)]
        self.memory.adapter_holds(None)  # the adapter is about to hold uncommitted weights
        reset_adapter(lm, config.seed)
        named = list(dict.fromkeys(document.id for document in documents))  # sections: once
        label = named[0] + (f" and {len(named) - 1} more" if len(named) > 1 else "")
        with self._bar.transformation(sum(map(len, chunks)), label):
            outcomes, slots = transform_fresh_documents(lm, chunks, config, rngs)
        folders = [folder / store.shard_dir(shard) for shard in shards]
        stored = config.consolidation.adapter_dtype
        write = adapter_writes(folders, adapter_config_json(lm.model), slots, stored)
        results = []
        for slot, (shard, document) in enumerate(zip(shards, documents, strict=True)):
            selected = outcomes[slot].selected
            record = self._record(shard, document, chunks[slot], selected)
            results.append(ShardResult(shard, {document.id: record}, chunks[slot], selected))
        slots.copy_to_adapter(len(shards) - 1)  # the adapter holds the last shard's weights

        def timed_write() -> None:
            started = time.perf_counter()
            write()
            logger.info("wrote %d shards in %.1fs", len(shards), time.perf_counter() - started)

        return results, timed_write

    # --- one shard at a time ------------------------------------------------------------
    def _add_document(self, document: Document, shard: int) -> None:
        """Consolidate one document into the active `shard` and commit it."""
        shard_items = self._items_of_shard(shard)
        chunks, items = self._consolidate(shard, document, self.held_chunks, shard_items)
        self.held_chunks.update({chunk.id: chunk for chunk in chunks})
        self.held_items.extend(items)
        documents = dict(self.memory.manifest.documents)
        record = self._record(shard, document, chunks, items)
        documents[document.id] = _with_section(documents.get(document.id), record)
        self.memory.commit(documents, shard, self.held_chunks, self.held_items)
        self.report.count(document.id, chunks, items)

    def _consolidate_shard(self, shard: int, folder: Path) -> ShardResult:
        """Consolidate the shard's planned documents, in order, and save its weights under
        `folder`, committing nothing (a multi-GPU ingest commits every shard at once)."""
        self.memory.activate(shard)
        known_chunks = dict(self.held_chunks)
        shard_items = self._items_of_shard(shard)
        result = ShardResult(shard)
        try:
            for document in self.shards[shard]:
                chunks, items = self._consolidate(shard, document, known_chunks, shard_items)
                known_chunks.update({chunk.id: chunk for chunk in chunks})
                shard_items = shard_items + items
                result.records[document.id] = self._record(shard, document, chunks, items)
                result.chunks.extend(chunks)
                result.items.extend(items)
            save_adapter(
                self.memory.lm.model,
                folder / store.shard_dir(shard),
                self.config.consolidation.adapter_dtype,
            )
        finally:
            self.memory.adapter_holds(None)  # the adapter holds weights not committed
        return result

    def _items_of_shard(self, shard: int) -> list[TransferItem]:
        """The held transfer items of `shard`'s committed documents."""
        return items_of_shard(
            shard, self.held_items, self.held_chunks, self.memory.manifest.documents
        )

    def _consolidate(
        self,
        shard: int,
        document: Document,
        held_chunks: dict[str, Chunk],
        held_items: list[TransferItem],
    ) -> tuple[list[Chunk], list[TransferItem]]:
        config = self.config
        chunks = self._chunks_in(shard, document)
        rng = self._rng(shard, document)
        items: list[TransferItem] = []
        # A later transformation replays items of this document's earlier chunks too.
        known_chunks = {**held_chunks, **{chunk.id: chunk for chunk in chunks}}
        lm = self.memory.lm
        try:
            for group in batches(chunks, config.consolidation.chunks_per_transformation):
                with self._bar.transformation(len(group), document.id):
                    result = transform(lm, group, held_items + items, known_chunks, config, rng)
                items.extend(result.selected)
        except BaseException:
            # Nothing of this document was committed: the adapter no longer matches disk.
            self.memory.adapter_holds(None)
            raise
        return chunks, items


def _release_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _with_section(
    held: store.DocumentRecord | None, new: store.DocumentRecord
) -> store.DocumentRecord:
    """`new`, or for a section of a long document whose other sections `held` records, the
    document's record with the section added."""
    if held is None or not new.sections or held.content_hash != new.content_hash:
        return new
    sections = sorted([*held.sections, *new.sections], key=lambda s: s.first_chunk)
    return held.model_copy(
        update={
            "chunks": held.chunks + new.chunks,
            "tokens": held.tokens + new.tokens,
            "transfer_items": held.transfer_items + new.transfer_items,
            "shard": sections[0].shard,
            "sections": sections,
        }
    )


def _record(
    document: Document, shard: int, chunks: list[Chunk], items: list[TransferItem]
) -> store.DocumentRecord:
    return store.DocumentRecord(
        content_hash=document.content_hash,
        chunks=len(chunks),
        tokens=sum(chunk.tokens for chunk in chunks),
        transfer_items=len(items),
        added_at=store.now(),
        shard=shard,
        metadata=document.metadata,
    )
