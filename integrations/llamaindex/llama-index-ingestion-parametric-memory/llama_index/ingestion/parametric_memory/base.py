"""`ParametricMemoryTransform`: the last step of an `IngestionPipeline`, consolidating the
nodes it receives into a parametric memory, one memory document per source document (the
nodes pass through unchanged); `ParametricMemoryVectorStore`: what the pipeline's
`vector_store` slot takes so that its upserts and deletions reach the memory."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, field_validator, model_validator
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from pydantic import computed_field

from parametric_memory import (
    DocumentNotFoundError,
    IngestReport,
    InvalidDocumentError,
    ParametricMemory,
)
from parametric_memory import store as memory_store
from parametric_memory.documents import content_hash, validate_text
from parametric_memory.integration import model_lock, resolve_memory

logger = logging.getLogger(__name__)

REF_DOC_HASH = "ref_doc_hash"
"""Metadata key of the source document's LlamaIndex hash (`Document.hash`: its text and
metadata), which tells an unchanged document from a changed one however it was split."""


class ParametricMemoryTransform(TransformComponent):
    """Consolidate nodes into a parametric memory inside an `IngestionPipeline`.

    One source document is one memory document: the nodes of a call are grouped by
    `ref_doc_id` (a node without one is its own document) and their texts joined in document
    order, the overlap between consecutive splits written once, since the memory chunks
    text itself. The memory document's id is the `ref_doc_id`; its metadata is the scalar
    metadata all its nodes share (as strings), plus `ref_doc_id` and `ref_doc_hash` (the
    source `Document.hash`). The nodes of one document must come in one call, as a pipeline
    run passes them. The memory commits after each document (each group of up to 32 on a
    GPU), so an interrupted run keeps what it finished.

    Upserts: a document held with the same `ref_doc_hash` and metadata is left alone (no
    training). One held in another version is replaced (`on_conflict="replace"`: deleted,
    which retrains its shard, then added) or refused (`"error"`). Text the memory already
    holds under another id is skipped. For `docstore_strategy=UPSERTS` or
    `UPSERTS_AND_DELETE`, give the pipeline `vector_store=transform.as_vector_store()`: a
    pipeline without a vector store falls back to duplicates-only (with a warning) and never
    reports deleted documents, while with one it skips unchanged documents by id, forgets a
    changed one before this transform relearns it, and forgets documents gone from the
    source. The index-style `refresh_ref_docs` / `delete_ref_doc` work without a pipeline.

    Pipeline cache: the cache key hashes the nodes and this transform's serialised fields,
    which include the memory's path and its state (its documents and its commit), so a
    cached run is reused only while nothing was committed since the same nodes last came.

    Serialisable: `to_dict()` / `to_json()` name the memory by its folder (`memory_path`),
    and `from_dict()` / `from_json()` open it again.

    Runs in the pipeline's own process only: `pipeline.run(num_workers=N)` with N > 1
    pickles transformations into worker processes, which this transform refuses (one
    process holds the model and the memory's single-writer lock).
    """

    memory: Any = Field(exclude=True, description="A ParametricMemory or a memory folder.")
    on_conflict: Literal["replace", "error"] = Field(
        default="replace",
        description="What to do when a document id is held in another version.",
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.NONE,
        description="Which node metadata is written into the text consolidated (NONE: text only).",
    )
    progress: bool = Field(default=False, description="Show the consolidation progress bar.")

    @model_validator(mode="before")
    @classmethod
    def _from_serialised(cls, data: Any) -> Any:
        """`from_dict(to_dict())`: the memory is opened from `memory_path` (the serialised
        form holds no model); `memory_state` is computed, not set."""
        return _memory_from_path(data, computed=("memory_state",))

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> ParametricMemory:
        return resolve_memory(value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def memory_path(self) -> str:
        """The memory's folder: serialised in place of the memory, which `from_dict` opens."""
        return str(self.memory.root)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def memory_state(self) -> str:
        """What the memory holds (its document ids and content hashes, hashed) and its
        committed state (numbered, never reused): part of the pipeline cache key, so a
        cached run is reused only while nothing was committed since the same nodes came
        (a document deleted and then sent again is learned again)."""
        documents = self.memory.documents
        digest = hashlib.sha256()
        for doc_id in sorted(documents):
            digest.update(f"{doc_id}\0{documents[doc_id].content_hash}\n".encode())
        state = memory_store.read_manifest(self.memory.root).state
        return f"{len(documents)} documents, {state}, {digest.hexdigest()[:16]}"

    @classmethod
    def class_name(cls) -> str:
        return "ParametricMemoryTransform"

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "ParametricMemoryTransform cannot be sent to another process: run the "
            "IngestionPipeline with num_workers=None (or 1). The memory's model lives in this "
            "process and the memory has a single writer; consolidation is sequential anyway."
        )

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        self.consolidate(nodes)
        return nodes

    async def acall(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        await asyncio.to_thread(self.consolidate, nodes)
        return nodes

    def as_vector_store(self) -> ParametricMemoryVectorStore:
        """The pipeline's `vector_store=`, forwarding its deletions to this memory."""
        return ParametricMemoryVectorStore(memory=self.memory, progress=self.progress)

    def consolidate(self, nodes: Sequence[BaseNode]) -> IngestReport:
        """Write the nodes' documents into the memory; returns the memory's report (documents
        held unchanged, left alone, are listed as skipped)."""
        return self._sync(plan_documents(nodes, self.metadata_mode), self.on_conflict)

    def _sync(self, planned: dict[str, PlannedDocument], on_conflict: str) -> IngestReport:
        """Add the planned documents the memory lacks and replace those it holds in another
        version (or refuse them: `on_conflict="error"`)."""
        if not planned:
            return IngestReport()
        with model_lock(self.memory):
            held = self.memory.documents
            unchanged = [d for d, p in planned.items() if d in held and p.same_as(held[d])]
            stale = [d for d in planned if d in held and d not in unchanged]
            if stale and on_conflict == "error":
                raise InvalidDocumentError(
                    f"the memory holds document {stale[0]!r} with other text or metadata; "
                    "pass on_conflict='replace' or delete it first"
                )
            for doc_id in stale:
                logger.info("replacing memory document %r (it changed)", doc_id)
                self.memory.delete_document(doc_id, progress=self.progress)
            report = self._add({d: p for d, p in planned.items() if d not in unchanged})
            report.skipped.extend(unchanged)
            return report

    def _add(self, planned: dict[str, PlannedDocument]) -> IngestReport:
        if not planned:
            return IngestReport()
        return self.memory.add_documents(
            [p.text for p in planned.values()],
            ids=list(planned),
            metadatas=[p.metadata for p in planned.values()],
            progress=self.progress,
        )

    # --- the index API (`BaseIndex.refresh_ref_docs`, `delete_ref_doc`) -------------------
    def refresh_ref_docs(self, documents: Sequence[BaseNode], **kwargs: Any) -> list[bool]:
        """Consolidate the documents that are new or changed (each one whole, its text
        chunked by the memory), leave the unchanged ones alone; as `BaseIndex`'s, returns
        for each document whether it was (re)ingested. A changed document is replaced even
        with `on_conflict="error"`: refreshing asks for it."""
        latest = {_document_id(d): d for d in documents}  # the last version of an id wins
        planned = plan_documents(list(latest.values()), self.metadata_mode)
        added = set(self._sync(planned, "replace").added)
        return [_document_id(d) in added for d in documents]

    async def arefresh_ref_docs(self, documents: Sequence[BaseNode], **kwargs: Any) -> list[bool]:
        return await asyncio.to_thread(self.refresh_ref_docs, documents)

    def delete_ref_doc(self, ref_doc_id: str, **kwargs: Any) -> None:
        """Forget a source document (its shard is retrained without it); as `BaseIndex`'s,
        an id the memory does not hold is logged, not raised."""
        if not forget(self.memory, ref_doc_id, self.progress):
            logger.warning("ref_doc_id %s not found, nothing deleted.", ref_doc_id)

    async def adelete_ref_doc(self, ref_doc_id: str, **kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_ref_doc, ref_doc_id)


class ParametricMemoryVectorStore(BasePydanticVectorStore):
    """The `vector_store=` of an `IngestionPipeline` whose last step is a
    `ParametricMemoryTransform` (get one with `transform.as_vector_store()`).

    Not a store to query. An `IngestionPipeline` applies `docstore_strategy=UPSERTS` and
    `UPSERTS_AND_DELETE` only when it has a vector store: it then skips unchanged documents
    by id, calls `delete(ref_doc_id)` on a changed document before its nodes go through the
    transformations, and on each document gone from the source (`UPSERTS_AND_DELETE`).
    Here `delete` makes the memory forget the document (its shard is retrained without it)
    and the transform consolidates the new version; `add` consolidates nothing (the
    transform did) and `query` refuses: retrieve with `ParametricMemoryRetriever`.
    """

    stores_text: bool = False
    is_embedding_query: bool = False
    memory: Any = Field(exclude=True, description="A ParametricMemory or a memory folder.")
    progress: bool = Field(default=False, description="Show the retraining progress bar.")

    @field_validator("memory", mode="before")
    @classmethod
    def _open_memory(cls, value: Any) -> ParametricMemory:
        return resolve_memory(value)

    @classmethod
    def class_name(cls) -> str:
        return "ParametricMemoryVectorStore"

    @property
    def client(self) -> ParametricMemory:
        return self.memory

    def add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        if forget(self.memory, ref_doc_id, self.progress):
            logger.info("forgot memory document %r", ref_doc_id)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        raise NotImplementedError(
            "ParametricMemoryVectorStore only relays an IngestionPipeline's deletions to the "
            "memory; retrieve with ParametricMemoryRetriever or ParametricMemoryQueryEngine"
        )


@dataclass(frozen=True)
class PlannedDocument:
    """One source document as the memory is to hold it."""

    text: str
    metadata: dict[str, str]

    def same_as(self, record: memory_store.DocumentRecord) -> bool:
        """Whether `record` holds this version: the same metadata, and the same source
        `Document.hash` (however it was split) or, without one, the same text."""
        if record.metadata != self.metadata:
            return False
        return REF_DOC_HASH in self.metadata or record.content_hash == content_hash(self.text)


def plan_documents(nodes: Sequence[BaseNode], mode: MetadataMode) -> dict[str, PlannedDocument]:
    """The nodes with text, grouped into their source documents (by `ref_doc_id`, a node
    without one being its own), in the order they first appear."""
    groups: dict[str, list[BaseNode]] = {}
    for node in nodes:
        text = node.get_content(metadata_mode=MetadataMode.NONE)
        if text and text.strip():  # image nodes, empty splits: nothing to consolidate
            groups.setdefault(_document_id(node), []).append(node)
    return {doc_id: _planned(doc_id, group, mode) for doc_id, group in groups.items()}


def forget(memory: ParametricMemory, ref_doc_id: str, progress: bool) -> bool:
    """Delete a memory document; False when the memory does not hold it."""
    with model_lock(memory):
        if ref_doc_id not in memory.documents:
            return False
        try:
            memory.delete_document(ref_doc_id, progress=progress)
        except DocumentNotFoundError:  # deleted by another writer meanwhile
            return False
        return True


def _document_id(node: BaseNode) -> str:
    return node.ref_doc_id or node.node_id


def _planned(doc_id: str, group: list[BaseNode], mode: MetadataMode) -> PlannedDocument:
    body = _document_text(group)
    header = group[0].get_metadata_str(mode) if mode != MetadataMode.NONE else ""
    text = validate_text(f"{header}\n\n{body}" if header else body, f"document {doc_id!r}")
    metadata = {**_shared_metadata(group), "ref_doc_id": doc_id}
    versions = {node.source_node.hash if node.source_node else node.hash for node in group}
    version = versions.pop() if len(versions) == 1 else None
    if version:
        metadata[REF_DOC_HASH] = version
    return PlannedDocument(text, metadata)


def _document_text(group: list[BaseNode]) -> str:
    """The nodes' texts in document order, rebuilt from their character offsets when every
    node has ones matching its text: the overlap of consecutive splits is written once, and
    a gap between splits becomes a space (one character) or a blank line (more). Without
    offsets, the texts in the order given, a blank line between each two."""
    spans = [_span(node) for node in group]
    if any(span is None for span in spans):
        return "\n\n".join(node.get_content(metadata_mode=MetadataMode.NONE) for node in group)
    (_, end, text), *rest = sorted(spans)  # type: ignore[type-var]
    for start, stop, piece in rest:
        if stop <= end:
            continue  # inside what is already written
        gap = start - end
        text += (" " if gap == 1 else "\n\n") + piece if gap > 0 else piece[-gap:]
        end = stop
    return text


def _span(node: BaseNode) -> tuple[int, int, str] | None:
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    start = getattr(node, "start_char_idx", None)
    stop = getattr(node, "end_char_idx", None)
    if isinstance(start, int) and isinstance(stop, int) and stop - start == len(text):
        return start, stop, text
    return None


def _shared_metadata(group: list[BaseNode]) -> dict[str, str]:
    """The scalar metadata every node of the group has, as strings."""
    shared = _string_metadata(group[0])
    for node in group[1:]:
        other = _string_metadata(node)
        shared = {key: value for key, value in shared.items() if other.get(key) == value}
    return shared


def _string_metadata(node: BaseNode) -> dict[str, str]:
    return {
        str(key): str(value)
        for key, value in node.metadata.items()
        if isinstance(value, (str, int, float, bool))
    }


def _memory_from_path(data: Any, computed: Sequence[str] = ()) -> Any:
    """Constructor input with a serialised `memory_path` (and no `memory`) turned back into
    `memory=<path>`, and the `computed` fields a `to_dict()` also holds dropped."""
    if not isinstance(data, dict):
        return data
    data = {k: v for k, v in data.items() if k not in computed}
    path = data.pop("memory_path", None)
    if data.get("memory") is None and path is not None:
        data["memory"] = path
    return data
