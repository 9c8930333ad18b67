"""`ParametricMemory` — the face of the library: documents in, adapter out, answers from
weights. It runs the pipeline (chunking → elicitation → selection → consolidation) one
document at a time into the newest adapter shard, commits each finished document to the
store, and answers each question with the weights of the shard its router picks."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import store
from .adapter_files import adapter_config_json, write_adapter
from .chunking import Chunk, chunk_document
from .config import MemoryConfig
from .consolidate import attach_adapter, reset_adapter
from .distillation import batches
from .documents import Document, make_documents, read_files
from .elicit import TransferItem
from .errors import (
    CorruptMemoryError,
    DocumentNotFoundError,
    IncompatibleMemoryError,
    InvalidDocumentError,
    MemoryExistsError,
)
from .generation import generate, stream
from .merged_adapter import answering_weights
from .models import LoadedModel, load_model
from .routing import ShardRouter
from .sharding import group_shards, plan_shards
from .transformation import retrain, transform, transform_fresh_documents
from .verify import record_problems, records_disagreement

logger = logging.getLogger(__name__)

RECALL_TEMPLATE = "Tell me everything you know about {query}."


class MemoryInfo(BaseModel):
    path: str
    model: str
    model_fingerprint: str
    documents: int
    shards: int
    chunks: int
    tokens: int
    transfer_items: int
    adapter_bytes: int
    created_at: str
    updated_at: str


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    """Ids of the documents added, in the order they were given."""
    skipped: list[str] = field(default_factory=list)
    """Ids of documents whose content the memory already held (a no-op)."""
    chunks: int = 0
    transfer_items: int = 0

    def count(self, document_id: str, chunks: list[Chunk], items: list[TransferItem]) -> None:
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


@dataclass
class IngestPlan:
    """An ingest's new documents by shard (in ingest order), the records held before it,
    and its report so far (the documents skipped as already held)."""

    shards: dict[int, list[Document]]
    held_chunks: dict[str, Chunk]
    held_items: list[TransferItem]
    report: IngestReport

    def new_documents(self) -> list[Document]:
        return [document for documents in self.shards.values() for document in documents]


@dataclass
class Recollection:
    query: str
    text: str
    document_ids: list[str]
    """Held documents whose words the recalled text matches best (BM25, best first)."""


class ParametricMemory:
    """A memory folder plus the base model with its adapter. Use `create` or `open`."""

    def __init__(self, root: Path, manifest: store.Manifest, lm: LoadedModel) -> None:
        self.root = root
        self._manifest = manifest
        self._lm = lm
        self._active_shard: int | None = None
        """The shard whose committed weights the adapter holds; None when unknown."""
        self._router_cache: tuple[str | None, ShardRouter] | None = None
        self._chunks_of: dict[tuple[str, str], list[Chunk]] = {}
        """The current ingest's documents' chunks, by (id, content hash): planning, grouping
        and consolidation each need them."""
        self._model_lock = threading.RLock()
        """Held while a call loads, trains or answers with the adapter: threads sharing a
        memory (async integrations run calls in threads) take turns on the one model."""

    # --- construction -------------------------------------------------------------------
    @classmethod
    def create(
        cls, path: str | Path, config: MemoryConfig | None = None, *, exist_ok: bool = False
    ) -> ParametricMemory:
        """Make an empty memory at `path` (the folder may exist but must hold no memory)."""
        root = Path(path)
        if (root / store.MANIFEST_FILE).exists():
            if exist_ok:
                return cls.open(root)
            raise MemoryExistsError(f"{root} already holds a memory; open it instead")
        store.refuse_orphaned_states(root)
        config = config or MemoryConfig()
        lm = load_model(config)
        attach_adapter(lm, config.consolidation, config.seed)
        stamp = store.now()
        manifest = store.Manifest(
            created_at=stamp, updated_at=stamp, base_model=_model_record(lm), config=config
        )
        root.mkdir(parents=True, exist_ok=True)
        with store.write_lock(root):
            if (root / store.MANIFEST_FILE).exists():
                raise MemoryExistsError(f"{root} already holds a memory; open it instead")
            store.write_manifest(root, manifest)
        return cls(root, manifest, lm)

    @classmethod
    def open(
        cls, path: str | Path, *, device: str | None = None, trust_remote_code: bool = False
    ) -> ParametricMemory:
        """Open an existing memory; `device` overrides where the model runs this time. A
        memory whose manifest asks to run the model's own code opens only if the caller
        allows it with `trust_remote_code=True`: a folder must never be able to run code."""
        root = Path(path)
        manifest = store.read_manifest(root)
        config = manifest.config
        if config.trust_remote_code and not trust_remote_code:
            raise IncompatibleMemoryError(
                f"{root} asks to run its model's own code (trust_remote_code); open it with "
                "trust_remote_code=True only if you trust that model"
            )
        problems = record_problems(root, manifest)
        if problems:
            raise CorruptMemoryError(f"{root}: {problems[0]}; run `verify`")
        if device is not None:
            config = config.model_copy(update={"device": device})
        lm = load_model(config)
        if lm.fingerprint != manifest.base_model.fingerprint:
            raise IncompatibleMemoryError(
                f"{root} was built on model {manifest.base_model.name!r} (fingerprint "
                f"{manifest.base_model.fingerprint}) but {config.model!r} loads as "
                f"{lm.fingerprint}: use the same base model weights"
            )
        memory = cls(root, manifest, lm)
        memory._activate(memory._newest_shard())
        return memory

    def _activate(self, shard: int) -> None:
        """Load `shard`'s committed weights into the adapter (fresh weights for a new one)."""
        if self._active_shard == shard:
            return
        config = self._manifest.config
        if not isinstance(self._lm.model, PeftModel):
            attach_adapter(self._lm, config.consolidation, config.seed)
        path = store.shard_weights(self.root, self._manifest, shard)
        self._active_shard = None
        if path is None:
            reset_adapter(self._lm, config.seed)
        else:
            self._load_weights(path)
        self._active_shard = shard

    def _load_weights(self, path: Path) -> None:
        try:
            weights = load_file(path)
            result = set_peft_model_state_dict(self._lm.model, weights)
        except (OSError, RuntimeError, SafetensorError) as error:
            raise CorruptMemoryError(f"cannot load adapter {path}: {error}; run `verify`") from None
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing:
            raise CorruptMemoryError(f"{path} lacks {len(missing)} adapter tensors; run `verify`")

    # --- what it holds ------------------------------------------------------------------
    @property
    def config(self) -> MemoryConfig:
        return self._manifest.config

    @property
    def documents(self) -> dict[str, store.DocumentRecord]:
        return dict(self._manifest.documents)

    def info(self) -> MemoryInfo:
        manifest = self._manifest
        shards = self._shards()
        weights = [store.shard_weights(self.root, manifest, shard) for shard in shards]
        docs = manifest.documents.values()
        return MemoryInfo(
            path=str(self.root),
            model=manifest.base_model.name,
            model_fingerprint=manifest.base_model.fingerprint,
            documents=len(manifest.documents),
            shards=len(shards),
            chunks=sum(d.chunks for d in docs),
            tokens=sum(d.tokens for d in docs),
            transfer_items=sum(d.transfer_items for d in docs),
            adapter_bytes=sum(w.stat().st_size for w in weights if w and w.is_file()),
            created_at=manifest.created_at,
            updated_at=manifest.updated_at,
        )

    # --- writing ------------------------------------------------------------------------
    def add_documents(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[dict[str, str]] | None = None,
        *,
        progress: bool = True,
    ) -> IngestReport:
        """Consolidate documents into the memory, committing after each one (after each
        group, for fresh shards consolidated together: `ShardingConfig.shards_in_parallel`).
        Documents whose content is already held are skipped; an id held with other content
        is refused. With a shard per document (the default) documents are consolidated
        and committed fewest chunks first, then shortest first, and numbered in that order."""
        documents = make_documents(texts, ids)
        if metadatas is not None:
            if len(metadatas) != len(documents):
                raise InvalidDocumentError(
                    f"got {len(documents)} texts but {len(metadatas)} metadatas"
                )
            documents = [
                Document(d.id, d.text, {str(k): str(v) for k, v in m.items()})
                for d, m in zip(documents, metadatas, strict=True)
            ]
        return self._ingest(documents, progress)

    def add_files(self, paths: Sequence[str | Path], *, progress: bool = True) -> IngestReport:
        """Read .txt/.md files (folders recursively) and add them; ids are relative paths."""
        return self._ingest(read_files(paths), progress)

    def _ingest(self, documents: list[Document], progress: bool) -> IngestReport:
        with self._model_lock, store.write_lock(self.root):
            ingest = self._plan_ingest(documents)
            plan, report = ingest.shards, ingest.report
            held_chunks, held_items = ingest.held_chunks, ingest.held_items
            total = len(ingest.new_documents())
            bar = tqdm(
                total=total, desc="consolidating", unit="doc", disable=not progress or not total
            )
            with bar:
                for together, shards in self._work_order(plan, list(plan)):
                    if together:
                        self._add_together(plan, shards, held_chunks, held_items, report)
                        bar.update(len(shards))
                        continue
                    self._activate(shards[0])
                    for document in plan[shards[0]]:
                        bar.set_postfix_str(document.id[:30])
                        self._add_document(document, shards[0], held_chunks, held_items, report)
                        bar.update()
        report.list_in_given_order(documents)
        return report

    def _plan_ingest(self, documents: list[Document], *, writer: bool = True) -> IngestPlan:
        """Which shard each new document goes into, against the committed state (picked up
        afresh); documents already held go to the report as skipped."""
        chunk_records, held_items = self._refresh(writer=writer)
        self._chunks_of = {}
        report = IngestReport()
        todo = self._new_documents(documents, report)
        per_shard = self.config.sharding.documents_per_shard
        if per_shard == 1:
            todo = self._fewest_chunks_first(todo)
        return IngestPlan(
            shards=plan_shards(self._manifest.documents, todo, per_shard),
            held_chunks={chunk.id: chunk for chunk in chunk_records},
            held_items=held_items,
            report=report,
        )

    def _consolidate_uncommitted(
        self, ingest: IngestPlan, shards: list[int], folder: Path, bar: tqdm
    ) -> list[ShardResult]:
        """Consolidate the planned documents of `shards`, saving each shard's weights under
        `folder` and committing nothing (a multi-GPU ingest commits every shard at once)."""
        results: list[ShardResult] = []
        plan = ingest.shards
        for together, group in self._work_order(plan, shards):
            if together:
                results += self._consolidate_together(plan, group, folder)
            else:
                shard = group[0]
                held = (ingest.held_chunks, ingest.held_items)
                results.append(self._consolidate_shard(shard, plan[shard], *held, folder))
            bar.update(sum(len(plan[shard]) for shard in group))
        return results

    def _work_order(
        self, plan: dict[int, list[Document]], shards: list[int]
    ) -> list[tuple[bool, list[int]]]:
        """`shards` grouped as `sharding.group_shards` does: fresh shards of one document
        that fits one transformation are consolidated together, the others one by one."""
        width = self.config.sharding.shards_in_parallel
        if width is None:
            width = 128 if self._lm.device.type == "cuda" else 1
        limit = self.config.consolidation.chunks_per_transformation

        def fits_together(shard: int) -> bool:
            documents = plan[shard]
            return (
                len(documents) == 1
                and store.shard_weights(self.root, self._manifest, shard) is None
                and len(self._chunk(documents[0])) <= limit
            )

        return group_shards(shards, fits_together, width)

    def _add_together(
        self,
        plan: dict[int, list[Document]],
        shards: list[int],
        held_chunks: dict[str, Chunk],
        held_items: list[TransferItem],
        report: IngestReport,
    ) -> None:
        """Consolidate fresh one-document `shards` at once and commit them together; if the
        GPU runs out of memory for them, each half in turn."""
        staging = store.staging_folder(self.root)
        try:
            results = self._consolidate_together(plan, shards, staging)
            started = time.perf_counter()
            self._commit_results(results, staging, held_chunks, held_items)
            logger.info("committed %d shards in %.1fs", len(shards), time.perf_counter() - started)
            self._active_shard = shards[-1]  # the adapter holds its committed weights
        except torch.OutOfMemoryError:
            if len(shards) == 1:
                raise
            results = None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if results is None:
            half = len(shards) // 2
            logger.warning(
                "out of GPU memory consolidating %d documents together; trying %d, then %d "
                "(a lower sharding.shards_in_parallel avoids the retry)",
                len(shards),
                half,
                len(shards) - half,
            )
            _release_gpu_memory()
            self._add_together(plan, shards[:half], held_chunks, held_items, report)
            self._add_together(plan, shards[half:], held_chunks, held_items, report)
            return
        for result in results:
            for document_id in result.records:
                report.count(document_id, result.chunks, result.items)

    def _consolidate_together(
        self, plan: dict[int, list[Document]], shards: list[int], folder: Path
    ) -> list[ShardResult]:
        """Consolidate each of `shards` (fresh, one document each) into its own slot of a
        stacked adapter at once, and save each shard's weights under `folder`, committing
        nothing."""
        config = self.config
        documents = [plan[shard][0] for shard in shards]
        chunks = [self._chunk(document) for document in documents]
        rngs = [random.Random(f"{config.seed}:{d.content_hash}") for d in documents]
        self._active_shard = None  # the adapter is about to hold uncommitted weights
        reset_adapter(self._lm, config.seed)
        outcomes, slots = transform_fresh_documents(self._lm, chunks, config, rngs)
        started = time.perf_counter()
        config_json = adapter_config_json(self._lm.model)
        results = []
        for slot, (shard, document, tensors) in enumerate(
            zip(shards, documents, slots.state_dicts(), strict=True)
        ):
            write_adapter(folder / store.shard_dir(shard), config_json, tensors)
            selected = outcomes[slot].selected
            record = _record(document, shard, chunks[slot], selected)
            results.append(ShardResult(shard, {document.id: record}, chunks[slot], selected))
        slots.copy_to_adapter(len(shards) - 1)  # the adapter holds the last shard's weights
        logger.info("wrote %d shards in %.1fs", len(shards), time.perf_counter() - started)
        return results

    def _commit_results(
        self,
        results: list[ShardResult],
        staging: Path,
        held_chunks: dict[str, Chunk],
        held_items: list[TransferItem],
    ) -> None:
        """Commit every shard's new documents at once, in shard order, with the weights
        saved under `staging`; `held_chunks` and `held_items` take in the new records."""
        documents = dict(self._manifest.documents)
        for result in sorted(results, key=lambda result: result.shard):
            documents.update(result.records)
            held_chunks.update({chunk.id: chunk for chunk in result.chunks})
            held_items.extend(result.items)
        changed = {result.shard for result in results}

        def write_state(folder: Path) -> None:
            for shard in changed:  # moved, not copied: staging is on the memory's filesystem
                target = folder / store.shard_dir(shard)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / store.shard_dir(shard), target)
            self._write_records(folder, held_chunks, held_items)

        self._commit_state(documents, changed, write_state)

    def _add_document(
        self,
        document: Document,
        shard: int,
        held_chunks: dict[str, Chunk],
        held_items: list[TransferItem],
        report: IngestReport,
    ) -> None:
        """Consolidate one document into the active `shard` and commit it."""
        shard_items = self._items_of_shard(shard, held_items, held_chunks)
        chunks, items = self._consolidate(document, held_chunks, shard_items)
        self._commit_document(document, shard, chunks, items, held_chunks, held_items)
        report.count(document.id, chunks, items)

    def _consolidate_shard(
        self,
        shard: int,
        documents: list[Document],
        held_chunks: dict[str, Chunk],
        held_items: list[TransferItem],
        folder: Path,
    ) -> ShardResult:
        """Consolidate `documents`, in order, into `shard` and save its weights under
        `folder`, committing nothing (a multi-GPU ingest commits every shard at once)."""
        self._activate(shard)
        known_chunks = dict(held_chunks)
        shard_items = self._items_of_shard(shard, held_items, held_chunks)
        result = ShardResult(shard)
        try:
            for document in documents:
                chunks, items = self._consolidate(document, known_chunks, shard_items)
                known_chunks.update({chunk.id: chunk for chunk in chunks})
                shard_items = shard_items + items
                result.records[document.id] = _record(document, shard, chunks, items)
                result.chunks.extend(chunks)
                result.items.extend(items)
            self._lm.model.save_pretrained(folder / store.shard_dir(shard))
        finally:
            self._active_shard = None  # the adapter holds weights that were not committed
        return result

    def _new_documents(self, documents: list[Document], report: IngestReport) -> list[Document]:
        held = self._manifest.documents
        held_hashes = {record.content_hash for record in held.values()}
        todo, seen = [], set()
        for document in documents:
            if document.content_hash in held_hashes or document.content_hash in seen:
                report.skipped.append(document.id)
            elif document.id in held:
                raise InvalidDocumentError(
                    f"the memory already holds a different document with id {document.id!r}; "
                    "delete it first (delete_document / `forget`) to replace it"
                )
            else:
                todo.append(document)
                seen.add(document.content_hash)
        return todo

    def _shards(self) -> list[int]:
        return sorted({record.shard for record in self._manifest.documents.values()})

    def _newest_shard(self) -> int:
        return max(self._shards(), default=0)

    def _items_of_shard(
        self, shard: int, items: list[TransferItem], chunks: dict[str, Chunk]
    ) -> list[TransferItem]:
        documents = self._manifest.documents
        return [i for i in items if documents[chunks[i.chunk_id].document_id].shard == shard]

    def _fewest_chunks_first(self, documents: list[Document]) -> list[Document]:
        """One-document shards are planned in order of chunk count, then length. Shards
        consolidated together take as many steps as the longest document among them, and a
        document of two chunks takes twice the steps of one: in ingest order, every group of
        128 of the first 1,048 SQuAD passages held 3-35 longer ones, and the others sat out
        half its steps. Each shard's weights depend on its own document only, so the order
        changes no weights."""
        return sorted(documents, key=lambda d: (len(self._chunk(d)), len(d.text)))

    def _chunk(self, document: Document) -> list[Chunk]:
        key = (document.id, document.content_hash)
        if key not in self._chunks_of:
            tokenizer = self._lm.tokenizer
            self._chunks_of[key] = chunk_document(
                document.id,
                document.content_hash,
                document.text,
                self.config.chunking.chunk_tokens,
                lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
            )
        return self._chunks_of[key]

    def _consolidate(
        self, document: Document, held_chunks: dict[str, Chunk], held_items: list[TransferItem]
    ) -> tuple[list[Chunk], list[TransferItem]]:
        config = self.config
        chunks = self._chunk(document)
        rng = random.Random(f"{config.seed}:{document.content_hash}")
        items: list[TransferItem] = []
        # A later transformation replays items of this document's earlier chunks too.
        known_chunks = {**held_chunks, **{chunk.id: chunk for chunk in chunks}}
        try:
            for group in batches(chunks, config.consolidation.chunks_per_transformation):
                result = transform(self._lm, group, held_items + items, known_chunks, config, rng)
                items.extend(result.selected)
        except BaseException:
            # Nothing of this document was committed: the adapter no longer matches disk.
            self._active_shard = None
            raise
        return chunks, items

    def _commit_document(
        self,
        document: Document,
        shard: int,
        chunks: list[Chunk],
        items: list[TransferItem],
        held_chunks: dict[str, Chunk],
        held_items: list[TransferItem],
    ) -> None:
        held_chunks.update({chunk.id: chunk for chunk in chunks})
        held_items.extend(items)
        documents = {
            **self._manifest.documents,
            document.id: _record(document, shard, chunks, items),
        }
        self._commit(documents, shard, held_chunks, held_items)

    def _commit(
        self,
        documents: dict[str, store.DocumentRecord],
        changed_shard: int | None,
        chunks: dict[str, Chunk],
        items: list[TransferItem],
    ) -> None:
        """Commit `documents` with the adapter's weights as `changed_shard` (None: no shard
        changed but by removal); every other shard is carried over as committed."""

        def write_state(folder: Path) -> None:
            if changed_shard is not None:
                self._lm.model.save_pretrained(folder / store.shard_dir(changed_shard))
            self._write_records(folder, chunks, items)

        changed = set() if changed_shard is None else {changed_shard}
        self._commit_state(documents, changed, write_state)

    def _commit_state(
        self,
        documents: dict[str, store.DocumentRecord],
        changed_shards: set[int],
        write_state: Callable[[Path], None],
    ) -> None:
        """Commit a new state: `write_state` writes the changed shards and the records, the
        other shards' files are carried over as committed."""
        unchanged = {r.shard for r in documents.values()} - changed_shards
        manifest = self._manifest.model_copy(update={"documents": documents})
        self._manifest = store.commit(self.root, manifest, write_state, unchanged)

    def _write_records(
        self, folder: Path, chunks: dict[str, Chunk], items: list[TransferItem]
    ) -> None:
        store.write_jsonl(folder / store.CHUNKS_FILE, list(chunks.values()))
        store.write_jsonl(folder / store.TRANSFER_SET_FILE, items)

    def delete_document(self, document_id: str, *, progress: bool = True) -> None:
        """Remove a document and its influence: its shard's adapter is retrained from scratch
        on the kept transfer items of the shard's other documents, then committed atomically."""
        with self._model_lock, store.write_lock(self.root):
            chunk_records, item_records = self._refresh()
            if document_id not in self._manifest.documents:
                raise DocumentNotFoundError(f"the memory holds no document {document_id!r}")
            shard = self._manifest.documents[document_id].shard
            documents = {k: v for k, v in self._manifest.documents.items() if k != document_id}
            chunks = {c.id: c for c in chunk_records if c.document_id in documents}
            items = [i for i in item_records if i.chunk_id in chunks]
            shard_kept = any(r.shard == shard for r in documents.values())
            self._active_shard = None
            try:
                if shard_kept:
                    self._retrain_shard(shard, documents, chunks, items)
                self._commit(documents, shard if shard_kept else None, chunks, items)
            except BaseException:
                self._active_shard = None
                raise
            self._active_shard = shard if shard_kept else None

    def _retrain_shard(
        self,
        shard: int,
        documents: dict[str, store.DocumentRecord],
        chunks: dict[str, Chunk],
        items: list[TransferItem],
    ) -> None:
        kept = [i for i in items if documents[chunks[i.chunk_id].document_id].shard == shard]
        reset_adapter(self._lm, self.config.seed)
        if kept:
            retrain(self._lm, kept, chunks, self.config, random.Random(self.config.seed))

    def _refresh(self, *, writer: bool = True) -> tuple[list[Chunk], list[TransferItem]]:
        """Pick up commits another writer made since this memory was opened, and return the
        committed chunk and transfer-item records; refuse to write over a manifest that no
        longer matches them. The writer (holding the lock) then removes stale folders."""
        latest = store.read_manifest(self.root)
        if latest.state != self._manifest.state:
            self._manifest = latest
            self._active_shard = None
        chunks = store.read_chunks(self.root, self._manifest)
        items = store.read_transfer_set(self.root, self._manifest)
        problems = records_disagreement(self._manifest, chunks, items)
        if problems:
            raise CorruptMemoryError(f"{self.root}: {problems[0]}; run `verify`")
        if writer:
            store.remove_stale_states(self.root, self._manifest)
        return chunks, items

    # --- reading ------------------------------------------------------------------------
    def ask(self, question: str, *, max_new_tokens: int = 128) -> str:
        """Answer from the weights alone: the question is the whole prompt."""
        return self.ask_batch([question], max_new_tokens=max_new_tokens)[0]

    def ask_batch(self, questions: Sequence[str], *, max_new_tokens: int = 128) -> list[str]:
        for question in questions:
            _check_query(question, "question")
        return self._generate_routed(list(questions), list(questions), max_new_tokens)

    def stream(self, question: str, *, max_new_tokens: int = 128) -> Iterator[str]:
        """Like `ask`, yielding text as it is generated. Other calls on this memory wait
        until the stream is exhausted or closed (`close()`, or leaving a `for` loop early)."""
        _check_query(question, "question")
        return self._stream_routed(question, max_new_tokens)

    def _stream_routed(self, question: str, max_new_tokens: int) -> Iterator[str]:
        with self._answering_with(self._router().shards_for([question])[0]):
            yield from stream(self._lm, question, max_new_tokens)

    def _generate_routed(
        self, prompts: list[str], routing_texts: list[str], max_new_tokens: int
    ) -> list[str]:
        """Greedy answers to `prompts`, each with the weights of the shard its routing text
        is routed to; one batch per shard."""
        shards = self._router().shards_for(routing_texts)
        answers = [""] * len(prompts)
        for shard in sorted(set(shards)):
            picked = [i for i, s in enumerate(shards) if s == shard]
            with self._answering_with(shard):
                texts = generate(self._lm, [prompts[i] for i in picked], max_new_tokens, 16)
            for index, text in zip(picked, texts, strict=True):
                answers[index] = text.strip()
        return answers

    @contextlib.contextmanager
    def _answering_with(self, shard: int) -> Iterator[None]:
        """Inside, this thread alone uses the model, with `shard`'s weights as it answers best
        (merged into the base weights on CUDA)."""
        with self._model_lock:
            self._activate(shard)
            with answering_weights(self._lm.model):
                yield

    def _router(self) -> ShardRouter:
        """The BM25 router over the held chunks, built once per committed state."""
        state = self._manifest.state
        if self._router_cache is None or self._router_cache[0] != state:
            chunks = store.read_chunks(self.root, self._manifest)
            shard_of = {doc: record.shard for doc, record in self._manifest.documents.items()}
            self._router_cache = (state, ShardRouter(chunks, shard_of))
        return self._router_cache[1]

    def recall(self, query: str, *, max_new_tokens: int = 192) -> Recollection:
        """Write out, as plain text, what the memory holds about `query` — for handing to
        another LLM where a retriever's documents would go."""
        _check_query(query, "query")
        prompt = RECALL_TEMPLATE.format(query=query.strip().rstrip("?.!"))
        text = self._generate_routed([prompt], [query], max_new_tokens)[0]
        return Recollection(query, text, self._router().documents_for(text, limit=3))

    @property
    def model(self) -> LoadedModel:
        """The base model with the memory's adapter (for integrations and benchmarks)."""
        return self._lm


def _release_gpu_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _check_query(text: object, label: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidDocumentError(f"{label} must be a non-empty string, got {text!r}")


def _model_record(lm: LoadedModel) -> store.BaseModelRecord:
    config = lm.model.config
    return store.BaseModelRecord(
        name=lm.name,
        fingerprint=lm.fingerprint,
        model_type=str(config.model_type),
        vocab_size=int(config.vocab_size),
        hidden_size=int(config.hidden_size),
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
