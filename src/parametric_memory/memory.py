"""`ParametricMemory` — the face of the library: documents in, adapter out, answers from
weights. It runs the pipeline (chunking → elicitation → selection → consolidation) one
document at a time and commits each finished document to the store."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peft import PeftModel, set_peft_model_state_dict
from pydantic import BaseModel
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from . import store
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
from .models import LoadedModel, load_model
from .transformation import retrain, transform

logger = logging.getLogger(__name__)

RECALL_TEMPLATE = "Tell me everything you know about {query}."


class MemoryInfo(BaseModel):
    path: str
    model: str
    model_fingerprint: str
    documents: int
    chunks: int
    tokens: int
    transfer_items: int
    adapter_bytes: int
    created_at: str
    updated_at: str


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Ids of documents whose content the memory already held (a no-op)."""
    chunks: int = 0
    transfer_items: int = 0


@dataclass
class Recollection:
    query: str
    text: str
    document_ids: list[str]
    """Held documents whose words the recalled text overlaps most (best first)."""


class ParametricMemory:
    """A memory folder plus the base model with its adapter. Use `create` or `open`."""

    def __init__(self, root: Path, manifest: store.Manifest, lm: LoadedModel) -> None:
        self.root = root
        self._manifest = manifest
        self._lm = lm
        self._chunk_words_cache: list[tuple[str, set[str]]] | None = None
        self._chunk_words_state: str | None = None

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
    def open(cls, path: str | Path, *, device: str | None = None) -> ParametricMemory:
        """Open an existing memory; `device` overrides where the model runs this time."""
        root = Path(path)
        manifest = store.read_manifest(root)
        config = manifest.config
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
        memory._load_adapter()
        return memory

    def _load_adapter(self) -> None:
        """Make the adapter's weights those of the committed state (fresh if none)."""
        config = self._manifest.config
        if not isinstance(self._lm.model, PeftModel):
            attach_adapter(self._lm, config.consolidation, config.seed)
        if self._manifest.state is None:
            reset_adapter(self._lm, config.seed)
            return
        path = self.root / self._manifest.state / store.ADAPTER_WEIGHTS_FILE
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
        weights = (
            self.root / manifest.state / store.ADAPTER_WEIGHTS_FILE if manifest.state else None
        )
        docs = manifest.documents.values()
        return MemoryInfo(
            path=str(self.root),
            model=manifest.base_model.name,
            model_fingerprint=manifest.base_model.fingerprint,
            documents=len(manifest.documents),
            chunks=sum(d.chunks for d in docs),
            tokens=sum(d.tokens for d in docs),
            transfer_items=sum(d.transfer_items for d in docs),
            adapter_bytes=weights.stat().st_size if weights and weights.is_file() else 0,
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
        """Consolidate documents into the memory, committing after each one. Documents whose
        content is already held are skipped; an id held with other content is refused."""
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
        report = IngestReport()
        with store.write_lock(self.root):
            self._refresh()
            todo = self._new_documents(documents, report)
            if not todo:
                return report
            held_chunks = {c.id: c for c in store.read_chunks(self.root, self._manifest)}
            held_items = store.read_transfer_set(self.root, self._manifest)
            bar = tqdm(todo, desc="consolidating", unit="doc", disable=not progress)
            for document in bar:
                bar.set_postfix_str(document.id[:30])
                chunks, items = self._consolidate(document, held_chunks, held_items)
                self._commit_document(document, chunks, items, held_chunks, held_items)
                report.added.append(document.id)
                report.chunks += len(chunks)
                report.transfer_items += len(items)
        return report

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

    def _consolidate(
        self, document: Document, held_chunks: dict[str, Chunk], held_items: list[TransferItem]
    ) -> tuple[list[Chunk], list[TransferItem]]:
        config = self.config
        tokenizer = self._lm.tokenizer
        chunks = chunk_document(
            document.id,
            document.content_hash,
            document.text,
            config.chunking.chunk_tokens,
            lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
        )
        rng = random.Random(f"{config.seed}:{document.content_hash}")
        items: list[TransferItem] = []
        try:
            for group in batches(chunks, config.consolidation.chunks_per_transformation):
                result = transform(self._lm, group, held_items + items, held_chunks, config, rng)
                items.extend(result.selected)
        except BaseException:
            # Nothing of this document was committed: the adapter goes back to match disk.
            self._load_adapter()
            raise
        return chunks, items

    def _commit_document(
        self,
        document: Document,
        chunks: list[Chunk],
        items: list[TransferItem],
        held_chunks: dict[str, Chunk],
        held_items: list[TransferItem],
    ) -> None:
        held_chunks.update({chunk.id: chunk for chunk in chunks})
        held_items.extend(items)
        record = store.DocumentRecord(
            content_hash=document.content_hash,
            chunks=len(chunks),
            tokens=sum(chunk.tokens for chunk in chunks),
            transfer_items=len(items),
            added_at=store.now(),
            metadata=document.metadata,
        )
        documents = {**self._manifest.documents, document.id: record}
        manifest = self._manifest.model_copy(update={"documents": documents})
        self._manifest = store.commit(
            self.root, manifest, lambda folder: self._write_state(folder, held_chunks, held_items)
        )

    def _write_state(
        self, folder: Path, chunks: dict[str, Chunk], items: list[TransferItem]
    ) -> None:
        self._lm.model.save_pretrained(folder / store.ADAPTER_DIR)
        store.write_jsonl(folder / store.CHUNKS_FILE, list(chunks.values()))
        store.write_jsonl(folder / store.TRANSFER_SET_FILE, items)

    def delete_document(self, document_id: str, *, progress: bool = True) -> None:
        """Remove a document and its influence: the adapter is retrained from scratch on the
        kept transfer items of the other documents, then committed atomically."""
        with store.write_lock(self.root):
            self._refresh()
            if document_id not in self._manifest.documents:
                raise DocumentNotFoundError(f"the memory holds no document {document_id!r}")
            chunks = {
                c.id: c
                for c in store.read_chunks(self.root, self._manifest)
                if c.document_id != document_id
            }
            items = [
                i
                for i in store.read_transfer_set(self.root, self._manifest)
                if i.chunk_id in chunks
            ]
            try:
                reset_adapter(self._lm, self.config.seed)
                if items:
                    retrain(self._lm, items, chunks, self.config, random.Random(self.config.seed))
                documents = {k: v for k, v in self._manifest.documents.items() if k != document_id}
                manifest = self._manifest.model_copy(update={"documents": documents})
                self._manifest = store.commit(
                    self.root, manifest, lambda folder: self._write_state(folder, chunks, items)
                )
            except BaseException:
                self._load_adapter()
                raise

    def _refresh(self) -> None:
        """Pick up commits another writer made since this memory was opened."""
        latest = store.read_manifest(self.root)
        if latest.state != self._manifest.state:
            self._manifest = latest
            self._load_adapter()
        store.remove_stale_states(self.root, self._manifest)

    # --- reading ------------------------------------------------------------------------
    def ask(self, question: str, *, max_new_tokens: int = 128) -> str:
        """Answer from the weights alone: the question is the whole prompt."""
        _check_query(question, "question")
        return generate(self._lm, [question], max_new_tokens, batch_size=1)[0].strip()

    def ask_batch(self, questions: Sequence[str], *, max_new_tokens: int = 128) -> list[str]:
        for question in questions:
            _check_query(question, "question")
        answers = generate(self._lm, list(questions), max_new_tokens, batch_size=16)
        return [a.strip() for a in answers]

    def stream(self, question: str, *, max_new_tokens: int = 128) -> Iterator[str]:
        """Like `ask`, yielding text as it is generated."""
        _check_query(question, "question")
        return stream(self._lm, question, max_new_tokens)

    def recall(self, query: str, *, max_new_tokens: int = 192) -> Recollection:
        """Write out, as plain text, what the memory holds about `query` — for handing to
        another LLM where a retriever's documents would go."""
        _check_query(query, "query")
        prompt = RECALL_TEMPLATE.format(query=query.strip().rstrip("?.!"))
        text = generate(self._lm, [prompt], max_new_tokens, batch_size=1)[0].strip()
        return Recollection(query, text, self._likely_sources(text))

    def _likely_sources(self, text: str, limit: int = 3) -> list[str]:
        words = _content_words(text)
        if not words:
            return []
        overlap: dict[str, int] = {}
        for document_id, chunk_words in self._chunk_words():
            shared = len(words & chunk_words)
            overlap[document_id] = max(overlap.get(document_id, 0), shared)
        ranked = sorted((n, doc) for doc, n in overlap.items() if n >= 2)
        return [doc for _, doc in reversed(ranked)][:limit]

    def _chunk_words(self) -> list[tuple[str, set[str]]]:
        """Each held chunk's content words, read once per committed state (not per recall)."""
        state = self._manifest.state
        if self._chunk_words_cache is None or self._chunk_words_state != state:
            chunks = store.read_chunks(self.root, self._manifest)
            self._chunk_words_cache = [(c.document_id, _content_words(c.text)) for c in chunks]
            self._chunk_words_state = state
        return self._chunk_words_cache

    @property
    def model(self) -> LoadedModel:
        """The base model with the memory's adapter (for integrations and benchmarks)."""
        return self._lm


def _check_query(text: object, label: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise InvalidDocumentError(f"{label} must be a non-empty string, got {text!r}")


def _content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if len(w) > 3}


def _model_record(lm: LoadedModel) -> store.BaseModelRecord:
    config = lm.model.config
    return store.BaseModelRecord(
        name=lm.name,
        fingerprint=lm.fingerprint,
        model_type=str(config.model_type),
        vocab_size=int(config.vocab_size),
        hidden_size=int(config.hidden_size),
    )
