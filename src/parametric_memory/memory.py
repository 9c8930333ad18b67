"""`ParametricMemory` — the face of the library: documents in, adapter out, answers from
weights. It holds the memory's folder, base model and adapter; an `Ingest` (`ingest.py`)
runs the pipeline (chunking → elicitation → selection → consolidation) into the adapter
shards and commits through it; it answers each question with the weights of the shard its
router picks."""

from __future__ import annotations

import contextlib
import logging
import random
import reprlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from peft import PeftModel, set_peft_model_state_dict
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import store
from .coalescing import Coalescer
from .compaction import Compaction, level_zero
from .config import CompactionConfig, MemoryConfig, RoutingConfig
from .documents import make_documents, read_files
from .engine.adapter_files import save_adapter
from .engine.generation import encode_prompts, generate, generate_scored, stream
from .engine.merged_adapter import answering_weights
from .engine.models import LoadedModel, load_model
from .engine.row_adapters import AdapterBank, RowChoices, WeightedKeys
from .errors import (
    CorruptMemoryError,
    DocumentNotFoundError,
    IncompatibleMemoryError,
    InvalidArgumentError,
    InvalidDocumentError,
    MemoryExistsError,
)
from .ingest import Ingest, IngestReport
from .method.consolidate import attach_adapter, reset_adapter
from .method.prompts import PROMPT_VERSION, RECALL_TEMPLATE
from .method.transformation import retrain
from .records import Chunk, CompactionReport, Document, TransferItem
from .reranking import reranked
from .routing import ShardRouter, composition_weights
from .sharding import items_of_shard
from .store.verify import record_problems, records_disagreement

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_READ_ATTEMPTS = 5
"""Reads repeated on newer states when commits keep retiring the one being read."""
_MERGED_GROUP = 16
"""Questions one shard must have for their batch to be answered with its update merged into
the base weights (CUDA's fast decoder); fewer, a lone question included, share batches with
other shards' questions, each row with its own adapter from the device bank, which costs far
less than reading the shard into the adapter, merging it and a batch per shard."""
_ROW_BATCH = 64
"""Questions per batch when each row computes its own adapter's update."""
_BANK_BYTES = 2 << 30
"""Most bytes of shards' saved weights kept on the model's device for per-row answers
(2,700 shards of the default adapter), least recently used out; the bank grows to it only
as shards are used."""


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
class Recollection:
    query: str
    text: str
    document_ids: list[str]
    """Held documents whose words the recalled text matches best (BM25, best first); where
    it matches none, those the query matches best (whose weights wrote the text)."""


@dataclass
class Candidate:
    """One shard's answer to a question (`ParametricMemory.answer_candidates`)."""

    shard: int
    document_ids: list[str]
    """The documents the shard holds: whose weights wrote the answer."""
    answer: str
    confidence: float
    """Mean log-probability of the answer's tokens under the shard's weights."""
    router_score: float
    """BM25 score of the shard's best chunk for the question."""
    base_confidence: float = 0.0
    """Mean log-probability of the same tokens under the base model (no shard): how much
    the shard's weights raised its answer is `confidence - base_confidence`."""


@dataclass(frozen=True)
class Route:
    """A shard that would answer a question (`ParametricMemory.route`), in answering order."""

    shard: int
    document_ids: list[str]
    """The documents the shard holds: the sources of an answer it writes."""
    router_score: float
    """BM25 score of the shard's best chunk for the question."""


class ParametricMemory:
    """A memory folder plus the base model with its adapter. Use `create` or `open`."""

    def __init__(self, root: Path, manifest: store.Manifest, lm: LoadedModel) -> None:
        self.root = root
        self._manifest = manifest
        self._lm = lm
        self._active_shard: int | None = None
        """The shard whose committed weights the adapter holds; None when unknown."""
        self._router_cache: tuple[str | None, ShardRouter] | None = None
        self._bank: tuple[object, AdapterBank] | None = None
        """Shards' saved weights on the model's device for per-row answers, by file (a
        commit writes new files, so an entry never goes stale), with the model it serves."""
        self._manifest_stamp: tuple[int, int, int] | None = None
        """What the manifest file was when `_manifest` was last compared with it: a reader
        re-reads it only when another writer has replaced it (None: not yet compared)."""
        self._model_lock = threading.RLock()
        """Held while a call loads, trains or answers with the adapter: threads sharing a
        memory (async integrations run calls in threads) take turns on the one model."""
        self._routing_here: RoutingConfig | None = None
        """How this process routes questions, where `open` was given it (not saved)."""
        self._asks = Coalescer(self._model_lock, _ROW_BATCH)
        """Single questions and recalls of several threads, answered in shared batches."""

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
            created_at=stamp,
            updated_at=stamp,
            base_model=_model_record(lm),
            config=config,
            prompt_version=PROMPT_VERSION,
        )
        root.mkdir(parents=True, exist_ok=True)
        with store.storage_errors(root), store.write_lock(root):
            if (root / store.MANIFEST_FILE).exists():
                raise MemoryExistsError(f"{root} already holds a memory; open it instead")
            store.write_manifest(root, manifest)
        return cls(root, manifest, lm)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        device: str | None = None,
        trust_remote_code: bool = False,
        allow_downloads: bool = False,
        routing: RoutingConfig | None = None,
    ) -> ParametricMemory:
        """Open an existing memory; `device` overrides where the model runs this time, and
        `routing` how questions are routed (routing changes no weights, so any memory takes
        any `RoutingConfig`; it is not saved). A
        memory whose manifest asks to run the model's own code opens only if the caller
        allows it with `trust_remote_code=True`: a folder must never be able to run code.
        A hub model the manifest names loads from the local cache only, unless the caller
        allows downloads: a folder must not make the process fetch from a network."""
        root = Path(path)
        manifest = store.read_manifest(root)
        config = manifest.config
        if config.trust_remote_code and not trust_remote_code:
            raise IncompatibleMemoryError(
                f"{root} asks to run its model's own code (trust_remote_code); open it with "
                "trust_remote_code=True only if you trust that model"
            )
        manifest = _sound_committed_state(root, manifest)
        if device is not None:
            config = config.model_copy(update={"device": device})
        lm = load_model(config, allow_downloads=allow_downloads)
        if lm.fingerprint != manifest.base_model.fingerprint:
            raise IncompatibleMemoryError(
                f"{root} was built on model {manifest.base_model.name!r} (fingerprint "
                f"{manifest.base_model.fingerprint}) but {config.model!r} loads as "
                f"{lm.fingerprint}: use the same base model weights"
            )
        memory = cls(root, manifest, lm)
        memory._routing_here = routing
        memory._following_commits(lambda: memory._activate(memory._newest_shard()))
        return memory

    def _activate(self, shard: int) -> None:
        """Load `shard`'s committed weights into the adapter (fresh weights for a new one)."""
        if self._active_shard == shard:
            return
        config = self._manifest.config
        self._ensure_adapter()
        path = store.shard_weights(self.root, self._manifest, shard)
        self._active_shard = None
        if path is None:
            reset_adapter(self._lm, config.seed)
        else:
            self._load_weights(path)
        self._active_shard = shard

    def _ensure_adapter(self) -> None:
        """The model carries the memory's LoRA adapter (its shape) from the first answer on."""
        if not isinstance(self._lm.model, PeftModel):
            config = self._manifest.config
            attach_adapter(self._lm, config.consolidation, config.seed)

    @staticmethod
    def _read_weights(path: Path) -> dict:
        try:
            return load_file(path)
        except (OSError, RuntimeError, SafetensorError) as error:
            raise CorruptMemoryError(f"cannot load adapter {path}: {error}; run `verify`") from None

    def _row_choices(self, rows: list[WeightedKeys]) -> RowChoices:
        """`rows` (each a list of weighted shard files) on the memory's adapter bank."""
        self._ensure_adapter()
        model = self._lm.model
        if self._bank is None or self._bank[0] is not model:
            self._bank = (model, AdapterBank(model, self._read_weights, _BANK_BYTES))
        return RowChoices(self._bank[1], rows)

    def _load_weights(self, path: Path) -> None:
        weights = self._read_weights(path)
        try:
            result = set_peft_model_state_dict(self._lm.model, weights)
        except RuntimeError as error:
            raise CorruptMemoryError(f"cannot load adapter {path}: {error}; run `verify`") from None
        missing = [k for k in result.missing_keys if "lora_" in k]
        if missing:
            raise CorruptMemoryError(f"{path} lacks {len(missing)} adapter tensors; run `verify`")

    # --- what it holds ------------------------------------------------------------------
    @property
    def config(self) -> MemoryConfig:
        """The memory's config (with this process's routing, if `open` was given one)."""
        if self._routing_here is None:
            return self._manifest.config
        return self._manifest.config.model_copy(update={"routing": self._routing_here})

    @property
    def documents(self) -> dict[str, store.DocumentRecord]:
        self._pick_up_commits()
        return dict(self._manifest.documents)

    def info(self) -> MemoryInfo:
        self._pick_up_commits()
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
        self._warn_of_other_prompts()
        with store.storage_errors(self.root), self._model_lock, store.write_lock(self.root):
            report = Ingest(self.writer(), documents).run(progress)
            threshold = self.config.compaction.auto_after
            if threshold is not None and len(level_zero(self._manifest)) >= threshold:
                report.compaction = Compaction(self.writer()).run(progress)
            return report

    def compact(
        self, settings: CompactionConfig | None = None, *, progress: bool = True
    ) -> CompactionReport:
        """Consolidate the documents held at level 0 (a shard each) again, in groups of
        related documents trained jointly, each group into one shard that replaces theirs
        in one atomic commit. Answers then come from fewer shards, which the router picks
        right more often, but a shared shard answers worse than each document's own did
        (measured: benchmarks/RESULTS.md). `settings`: this call's, instead of the memory's
        `config.compaction`."""
        with store.storage_errors(self.root), self._model_lock, store.write_lock(self.root):
            return Compaction(self.writer(), settings).run(progress)

    def _warn_of_other_prompts(self) -> None:
        held = self._manifest.prompt_version
        if held != PROMPT_VERSION:
            logger.warning(
                "%s holds transfer items elicited with prompt version %d; this library writes "
                "and retrains with version %d, so old and new documents were taught differently",
                self.root,
                held,
                PROMPT_VERSION,
            )

    def writer(self) -> _Writer:
        """The side of this memory an ingest writes through (`ingest.MemoryWriter`). The
        caller holds the write lock (`store.write_lock`) while it writes."""
        return _Writer(self)

    def _shards(self) -> list[int]:
        return sorted({s for record in self._manifest.documents.values() for s in record.shards})

    def _newest_shard(self) -> int:
        return max(self._shards(), default=0)

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
                stored = self.config.consolidation.adapter_dtype
                save_adapter(self._lm.model, folder / store.shard_dir(changed_shard), stored)
            self._write_records(folder, chunks, items)

        changed = set() if changed_shard is None else {changed_shard}
        self._commit_state(documents, changed, write_state)

    def _commit_state(
        self,
        documents: dict[str, store.DocumentRecord],
        changed_shards: set[int],
        write_state: Callable[[Path], None],
        updates: dict | None = None,
    ) -> None:
        """Commit a new state: `write_state` writes the changed shards and the records, the
        other shards' files are carried over as committed; `updates`: other manifest fields
        that change with it. Compacted shards no document is left in are dropped."""
        held = {shard for record in documents.values() for shard in record.shards}
        unchanged = held - changed_shards
        compacted = (updates or {}).get("compacted_shards", self._manifest.compacted_shards)
        changes = {**(updates or {}), "documents": documents}
        changes["compacted_shards"] = [shard for shard in compacted if shard in held]
        manifest = self._manifest.model_copy(update=changes)
        self._manifest = store.commit(self.root, manifest, write_state, unchanged)

    def _write_records(
        self, folder: Path, chunks: dict[str, Chunk], items: list[TransferItem]
    ) -> None:
        store.write_jsonl(folder / store.CHUNKS_FILE, list(chunks.values()))
        store.write_jsonl(folder / store.TRANSFER_SET_FILE, items)

    def delete_document(self, document_id: str, *, progress: bool = True) -> None:
        """Remove a document and its influence: its shard's adapter is retrained from scratch
        on the kept transfer items of the shard's other documents, then committed atomically
        (a long document's section shards, which hold nothing else, are removed)."""
        self._warn_of_other_prompts()
        with store.storage_errors(self.root), self._model_lock, store.write_lock(self.root):
            chunk_records, item_records = self._refresh()
            if document_id not in self._manifest.documents:
                raise DocumentNotFoundError(f"the memory holds no document {document_id!r}")
            shard = self._manifest.documents[document_id].shard
            documents = {k: v for k, v in self._manifest.documents.items() if k != document_id}
            chunks = {c.id: c for c in chunk_records if c.document_id in documents}
            items = [i for i in item_records if i.chunk_id in chunks]
            shard_kept = any(shard in r.shards for r in documents.values())
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
        kept = items_of_shard(shard, items, chunks, documents)
        reset_adapter(self._lm, self.config.seed)
        if kept:
            retrain(self._lm, kept, chunks, self.config, random.Random(self.config.seed))

    def _refresh(self, *, writer: bool = True) -> tuple[list[Chunk], list[TransferItem]]:
        """Pick up commits another writer made since this memory was opened, and return the
        committed chunk and transfer-item records; refuse to write over a manifest that no
        longer matches them. The writer (holding the lock) then removes stale folders."""
        self._adopt(store.read_manifest(self.root))
        chunks = store.read_chunks(self.root, self._manifest)
        items = store.read_transfer_set(self.root, self._manifest)
        problems = records_disagreement(self._manifest, chunks, items)
        if problems:
            raise CorruptMemoryError(f"{self.root}: {problems[0]}; run `verify`")
        if writer:
            store.remove_stale_states(self.root, self._manifest)
        return chunks, items

    # --- reading ------------------------------------------------------------------------
    def ask(
        self,
        question: str,
        *,
        max_new_tokens: int = 128,
        shards_per_question: int | None = None,
        selection: Literal["router", "confidence"] | None = None,
    ) -> str:
        """Answer from the weights alone: the question is the whole prompt. Threads asking
        at once (LangChain's `batch`, async integrations, a server) are answered together:
        the next to get the model answers every question waiting with the same settings
        in one batch (`ask_batch`)."""
        check_max_new_tokens(max_new_tokens)
        _check_query(question, "question")
        self._routing(shards_per_question, selection)  # refused here, in the asker's thread
        options = {
            "max_new_tokens": max_new_tokens,
            "shards_per_question": shards_per_question,
            "selection": selection,
        }
        settings = ("ask", *options.items())
        return self._asks.answer(question, settings, lambda qs: self.ask_batch(qs, **options))

    def ask_batch(
        self,
        questions: Sequence[str],
        *,
        max_new_tokens: int = 128,
        shards_per_question: int | None = None,
        selection: Literal["router", "confidence"] | None = None,
    ) -> list[str]:
        """Answers from the weights alone, each question with the weights of its top shards
        (`shards_per_question`), or with the one shard among the router's candidates whose
        answer the model is surest of (`selection="confidence"`); None: the memory's
        `RoutingConfig`."""
        check_max_new_tokens(max_new_tokens)
        _check_queries(questions, "questions", "ask()")
        routing = self._routing(shards_per_question, selection)
        if routing.selection == "confidence":
            answered = self.answer_candidates(
                questions, candidates=routing.candidates, max_new_tokens=max_new_tokens
            )
            return [max(c, key=lambda c: c.confidence).answer for c in answered]
        shards = routing.shards_per_question
        return self._generate_routed(list(questions), list(questions), max_new_tokens, shards)

    def answer_candidates(
        self,
        questions: Sequence[str],
        *,
        candidates: int | None = None,
        max_new_tokens: int = 128,
    ) -> list[list[Candidate]]:
        """Each question answered by each of its router's top `candidates` shards alone
        (None: `RoutingConfig.candidates`), best routed first, with the model's confidence in
        each answer: what self-routing chooses among, and whose documents wrote each answer."""
        check_max_new_tokens(max_new_tokens)
        _check_queries(questions, "questions", "ask()")
        routing = self._routing(None, None)
        count = routing.candidates if candidates is None else _count(candidates, "candidates")
        with self._model_lock:
            self._check_fits(list(questions), max_new_tokens)
            return self._following_commits(
                lambda: self._candidates(list(questions), count, max_new_tokens)
            )

    def _candidates(
        self, questions: list[str], count: int, max_new_tokens: int
    ) -> list[list[Candidate]]:
        ranked = self._ranked(questions, count)
        pairs = [(i, shard, score) for i, row in enumerate(ranked) for shard, score in row]
        rows = self._row_choices([self._weighted([(shard, 1.0)]) for _, shard, _ in pairs])
        users = [questions[i] for i, _, _ in pairs]
        scored = generate_scored(self._lm, users, max_new_tokens, _ROW_BATCH, rows)
        held = self._documents_by_shard()
        answered: list[list[Candidate]] = [[] for _ in questions]
        for (i, shard, score), answer in zip(pairs, scored, strict=True):
            documents = held.get(shard, [])
            answered[i].append(
                Candidate(
                    shard,
                    documents,
                    answer.text.strip(),
                    answer.confidence,
                    score,
                    answer.base_confidence,
                )
            )
        return answered

    def route(self, questions: Sequence[str], *, shards: int = 1) -> list[list[Route]]:
        """Each question's top `shards` shards as answering picks them (BM25, re-ranked by
        the base model as `RoutingConfig` says), with the documents each holds: an answer's
        sources, found without answering."""
        _check_queries(questions, "questions", "route([question])")
        count = _count(shards, "shards")
        with self._model_lock:
            ranked = self._following_commits(lambda: self._ranked(list(questions), count))
            held = self._documents_by_shard()
        return [[Route(s, held.get(s, []), score) for s, score in row] for row in ranked]

    def _documents_by_shard(self) -> dict[int, list[str]]:
        held: dict[int, list[str]] = {}
        for document, record in self._manifest.documents.items():
            for shard in record.shards:
                held.setdefault(shard, []).append(document)
        return held

    def stream(
        self,
        question: str,
        *,
        max_new_tokens: int = 128,
        shards_per_question: int | None = None,
        selection: Literal["router", "confidence"] | None = None,
    ) -> Iterator[str]:
        """Like `ask`, yielding text as it is generated (a self-routed answer comes whole:
        it is chosen once every candidate has answered). Other calls on this memory wait
        until the stream is exhausted or closed (`close()`, or leaving a `for` loop early)."""
        check_max_new_tokens(max_new_tokens)
        _check_query(question, "question")
        routing = self._routing(shards_per_question, selection)
        if routing.selection == "confidence":
            return iter([self.ask(question, max_new_tokens=max_new_tokens, selection=selection)])
        return self._stream_routed(question, max_new_tokens, routing.shards_per_question)

    def _stream_routed(self, question: str, max_new_tokens: int, shards: int) -> Iterator[str]:
        with self._model_lock:
            self._check_fits([question], max_new_tokens)
            if shards > 1:
                rows = self._following_commits(
                    lambda: self._composed_rows([question], shards).loaded()
                )
                with rows.attached([0]):
                    yield from stream(self._lm, question, max_new_tokens)
                return
            shard = self._following_commits(lambda: self._routed_and_loaded(question))
            with self._answering_with(shard):
                yield from stream(self._lm, question, max_new_tokens)

    def _routed_and_loaded(self, question: str) -> int:
        shard = self._ranked([question], 1)[0][0][0]
        self._activate(shard)
        return shard

    def _following_commits(self, read: Callable[[], _T]) -> _T:
        """`read()` on the newest committed state. Another process may commit (and retire the
        state this memory read) at any moment, so a read that fails on a state that is no
        longer the committed one is repeated on the new one; on the committed state a
        failure is real damage."""
        for _ in range(_READ_ATTEMPTS):
            self._pick_up_commits()
            try:
                return read()
            except CorruptMemoryError:
                if store.read_manifest(self.root).state == self._manifest.state:
                    raise
                self._manifest_stamp = None  # a newer state: read it on the next attempt
        return read()

    def _pick_up_commits(self) -> None:
        """Follow the manifest if another writer replaced it since it was last read (one
        `stat` when nothing changed)."""
        stamp = _manifest_stamp(self.root)
        if stamp == self._manifest_stamp:
            return
        latest = store.read_manifest(self.root)
        self._manifest_stamp = stamp
        self._adopt(latest)

    def _adopt(self, latest: store.Manifest) -> None:
        """Take `latest` as the committed manifest if it names another state; the adapter then
        holds weights of no committed shard."""
        if latest.state != self._manifest.state:
            self._manifest = latest
            self._active_shard = None

    def _generate_routed(
        self, prompts: list[str], routing_texts: list[str], max_new_tokens: int, shards: int = 1
    ) -> list[str]:
        """Greedy answers to `prompts`, each with the weights of the shard its routing text
        is routed to (one batch per shard), or with the sum of its top `shards` shards'."""
        answer = self._answers if shards == 1 else self._composed_answers
        with self._model_lock:  # the tokenizer is not shared with a running ingest
            self._check_fits(prompts, max_new_tokens)
            return self._following_commits(
                lambda: answer(prompts, routing_texts, max_new_tokens, shards)
            )

    def _routing(self, shards: int | None, selection: str | None) -> RoutingConfig:
        """The memory's `RoutingConfig` with this call's choices, refused in one line. Asking
        for several shards a question routes by the router alone."""
        routing = self._routing_here or self._manifest.config.routing
        update: dict[str, object] = {}
        if shards is not None:
            update["shards_per_question"] = _count(shards, "shards_per_question")
            if shards != 1:
                update["selection"] = "router"
        if selection is not None:
            if selection not in ("router", "confidence"):
                raise InvalidArgumentError(
                    f"selection must be 'router' or 'confidence', got {selection!r}"
                )
            update["selection"] = selection
        chosen = routing.model_copy(update=update)
        if chosen.selection == "confidence" and chosen.shards_per_question != 1:
            raise InvalidArgumentError("selection 'confidence' answers with one shard a question")
        return chosen

    def _composed_answers(
        self, prompts: list[str], routing_texts: list[str], max_new_tokens: int, shards: int
    ) -> list[str]:
        """Each prompt answered with the weighted sum of its top `shards` shards' updates,
        rows of different shards in one batch (`RoutingConfig`)."""
        adapters = self._composed_rows(routing_texts, shards)
        texts = generate(self._lm, prompts, max_new_tokens, _ROW_BATCH, adapters=adapters)
        return [text.strip() for text in texts]

    def _composed_rows(self, routing_texts: list[str], shards: int) -> RowChoices:
        """Each routing text's top `shards` shards' saved weights, with their weights in its
        sum (`RoutingConfig.weights`)."""
        mode = self._routing(None, None).weights
        ranked = self._ranked(routing_texts, shards)
        return self._row_choices([self._weighted(composition_weights(q, mode)) for q in ranked])

    def _ranked(self, texts: Sequence[str], shards: int) -> list[list[tuple[int, float]]]:
        """Each text's top `shards` shards, best first, each with its BM25 score: the
        router's top `RoutingConfig.rerank` re-ordered by the base model (`reranking.py`)."""
        routing = self._routing(None, None)
        router = self._router()
        if routing.rerank <= 1:
            return router.ranked_shards(texts, shards)
        ranked = router.ranked_chunks(texts, max(shards, routing.rerank))
        ordered = reranked(
            self._lm,
            texts,
            ranked,
            routing.rerank_bm25_weight,
            routing.rerank_words,
            routing.rerank_clear_margin,
        )
        return [row[:shards] for row in ordered]

    def _weighted(self, shards: Sequence[tuple[int, float]]) -> WeightedKeys:
        """The saved weights files of `shards` with their weights in a sum; a shard that
        holds nothing yet adds nothing."""
        row = []
        for shard, weight in shards:
            path = store.shard_weights(self.root, self._manifest, shard)
            if path is not None:
                row.append((path, weight))
        return row

    def _answers(
        self, prompts: list[str], routing_texts: list[str], max_new_tokens: int, _shards: int = 1
    ) -> list[str]:
        """Each prompt with its routed shard's weights: a shard with many prompts merged for
        their batch, the others' prompts in shared batches, each row with its own adapter."""
        shards = [row[0][0] for row in self._ranked(routing_texts, 1)]
        answers = [""] * len(prompts)
        few = []
        for shard in sorted(set(shards)):
            picked = [i for i, s in enumerate(shards) if s == shard]
            if len(picked) < _MERGED_GROUP:
                few += picked
                continue
            with self._answering_with(shard):
                texts = generate(self._lm, [prompts[i] for i in picked], max_new_tokens, 16)
            for index, text in zip(picked, texts, strict=True):
                answers[index] = text.strip()
        if few:
            rows = self._row_choices([self._weighted([(shards[i], 1.0)]) for i in few])
            texts = generate(
                self._lm, [prompts[i] for i in few], max_new_tokens, _ROW_BATCH, adapters=rows
            )
            for index, text in zip(few, texts, strict=True):
                answers[index] = text.strip()
        return answers

    def _check_fits(self, prompts: list[str], max_new_tokens: int) -> None:
        """Refuse prompts whose tokens and answer would not fit in the model's context."""
        context = getattr(self._lm.model.config, "max_position_embeddings", None)
        if not isinstance(context, int) or not prompts:
            return
        longest = max(len(ids) for ids in encode_prompts(self._lm.tokenizer, prompts))
        if longest + max_new_tokens > context:
            raise InvalidDocumentError(
                f"a prompt of {longest} tokens plus max_new_tokens={max_new_tokens} exceeds "
                f"the model's context of {context} tokens: shorten it or lower max_new_tokens"
            )

    @contextlib.contextmanager
    def _answering_with(self, shard: int) -> Iterator[None]:
        """Inside, this thread alone uses the model, with `shard`'s weights as it answers best
        (merged into the base weights on CUDA)."""
        with self._model_lock:
            self._activate(shard)
            with answering_weights(self._lm.model, self._lm.backend.merged_answers):
                yield

    def _router(self) -> ShardRouter:
        """The BM25 router over the held chunks, built once per committed state."""
        state = self._manifest.state
        if self._router_cache is None or self._router_cache[0] != state:
            chunks = store.read_chunks(self.root, self._manifest)
            documents = self._manifest.documents
            shard_of = {doc: record.shard for doc, record in documents.items()}
            sections = {
                chunk.id: documents[chunk.document_id].shard_of_chunk(chunk.index)
                for chunk in chunks
                if chunk.document_id in documents and documents[chunk.document_id].sections
            }
            self._router_cache = (state, ShardRouter(chunks, shard_of, sections))
        return self._router_cache[1]

    def recall(self, query: str, *, max_new_tokens: int = 192) -> Recollection:
        """Write out, as plain text, what the memory holds about `query` — for handing to
        another LLM where a retriever's documents would go. Threads recalling at once are
        answered in one batch, as `ask` answers them."""
        check_max_new_tokens(max_new_tokens)
        _check_query(query, "query")
        return self._asks.answer(
            query,
            ("recall", max_new_tokens),
            lambda queries: self.recall_batch(queries, max_new_tokens=max_new_tokens),
        )

    def recall_batch(
        self, queries: Sequence[str], *, max_new_tokens: int = 192
    ) -> list[Recollection]:
        """`recall` of each query, queries routed to one shard generated in one batch."""
        check_max_new_tokens(max_new_tokens)
        _check_queries(queries, "queries", "recall()")
        prompts = [RECALL_TEMPLATE.format(query=q.strip().rstrip("?.!")) for q in queries]
        texts = self._generate_routed(prompts, list(queries), max_new_tokens)
        router = self._router()
        return [
            # where the text matches no held words, the documents whose weights wrote it
            Recollection(q, t, router.documents_for(t, 3) or router.documents_for(q, 3))
            for q, t in zip(queries, texts, strict=True)
        ]

    @property
    def model(self) -> LoadedModel:
        """The base model with the memory's adapter (for integrations and benchmarks)."""
        return self._lm


class _Writer:
    """`ingest.MemoryWriter` over a `ParametricMemory`: the few things an ingest may do to
    the memory it writes into."""

    def __init__(self, memory: ParametricMemory) -> None:
        self._memory = memory

    @property
    def root(self) -> Path:
        return self._memory.root

    @property
    def manifest(self) -> store.Manifest:
        return self._memory._manifest

    @property
    def lm(self) -> LoadedModel:
        return self._memory._lm

    def refresh(self, *, writer: bool = True) -> tuple[list[Chunk], list[TransferItem]]:
        return self._memory._refresh(writer=writer)

    def activate(self, shard: int) -> None:
        self._memory._activate(shard)

    def adapter_holds(self, shard: int | None) -> None:
        self._memory._active_shard = shard

    def commit(
        self,
        documents: dict[str, store.DocumentRecord],
        changed_shard: int | None,
        chunks: dict[str, Chunk],
        items: list[TransferItem],
    ) -> None:
        self._memory._commit(documents, changed_shard, chunks, items)

    def commit_state(
        self,
        documents: dict[str, store.DocumentRecord],
        changed_shards: set[int],
        write_state: Callable[[Path], None],
        updates: dict | None = None,
    ) -> None:
        self._memory._commit_state(documents, changed_shards, write_state, updates)

    def write_records(
        self, folder: Path, chunks: dict[str, Chunk], items: list[TransferItem]
    ) -> None:
        self._memory._write_records(folder, chunks, items)


MAX_NEW_TOKENS = 4096
"""The most tokens one answer of `ask`, `ask_batch`, `stream` or `recall` may generate."""
MAX_QUERY_CHARS = 32_000
"""The longest question or query, in characters (refused before it is tokenized)."""


def check_max_new_tokens(value: object) -> int:
    """`value` if it is a whole number from 1 to `MAX_NEW_TOKENS`, else refused."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS:
        raise InvalidArgumentError(
            f"max_new_tokens must be a whole number from 1 to {MAX_NEW_TOKENS} "
            f"(MAX_NEW_TOKENS), got {reprlib.repr(value)}: pass a number in that range"
        )
    return value


def _manifest_stamp(root: Path) -> tuple[int, int, int] | None:
    """Changes whenever a commit replaces the manifest (a new file: a new inode)."""
    try:
        stat = (root / store.MANIFEST_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _sound_committed_state(root: Path, manifest: store.Manifest) -> store.Manifest:
    """`manifest` if its state's records are sound, else the newer one a commit made while
    they were read; refused if the committed state itself is damaged."""
    for _ in range(_READ_ATTEMPTS):
        problems = record_problems(root, manifest)
        if not problems:
            return manifest
        latest = store.read_manifest(root)
        if latest.state == manifest.state:
            break
        manifest = latest
    raise CorruptMemoryError(f"{root}: {problems[0]}; run `verify`")


def _count(value: object, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
        raise InvalidArgumentError(f"{label} must be an integer from 1 to 16, got {value!r}")
    return value


def _check_queries(texts: object, label: str, single: str) -> None:
    """A list of query strings, each one checked; one string is refused (`single` takes it)."""
    if isinstance(texts, str):
        raise InvalidArgumentError(
            f"{label} must be a list of strings, got one string {reprlib.repr(texts)}: "
            f"use {single} for one"
        )
    for text in texts:  # type: ignore[attr-defined]
        _check_query(text, label[:-1])


def _check_query(text: object, label: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidDocumentError(f"{label} must be a non-empty string, got {text!r}")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidDocumentError(
            f"the {label} is {len(text):,} characters, more than the {MAX_QUERY_CHARS:,} "
            "allowed (MAX_QUERY_CHARS): shorten it"
        )


def _model_record(lm: LoadedModel) -> store.BaseModelRecord:
    config = lm.model.config
    return store.BaseModelRecord(
        name=lm.name,
        fingerprint=lm.fingerprint,
        model_type=str(config.model_type),
        vocab_size=int(config.vocab_size),
        hidden_size=int(config.hidden_size),
    )
