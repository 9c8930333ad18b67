"""`ParametricMemoryTransform`: the last step of an `IngestionPipeline`, consolidating the
nodes it receives into a parametric memory (the nodes pass through unchanged)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, field_validator, model_validator
from llama_index.core.schema import BaseNode, MetadataMode, TransformComponent
from pydantic import computed_field

from parametric_memory import IngestReport, InvalidDocumentError, ParametricMemory
from parametric_memory.documents import content_hash, validate_text
from parametric_memory.integration import model_lock, resolve_memory

logger = logging.getLogger(__name__)


class ParametricMemoryTransform(TransformComponent):
    """Consolidate nodes into a parametric memory inside an `IngestionPipeline`.

    Each node with text becomes one memory document (id: the node id; metadata: the
    node's scalar metadata as strings, plus `ref_doc_id`); the memory commits after each
    one (each group of up to 32 on a GPU), so an interrupted run keeps what it finished.
    Text the memory already holds is skipped, so re-running a pipeline (even with fresh node
    ids) consolidates only what is new. A node id the memory holds with other text is
    replaced (`on_conflict="replace"`: delete, which retrains the adapter, then add) or
    refused (`"error"`).

    Pipeline cache: the cache key hashes the nodes and this transform's serialised fields,
    which include the memory's path and a hash of the documents it holds, so a cached run
    is reused only while the memory holds the same documents.

    Serialisable: `to_dict()` / `to_json()` name the memory by its folder (`memory_path`),
    and `from_dict()` / `from_json()` open it again.

    Runs in the pipeline's own process only: `pipeline.run(num_workers=N)` with N > 1
    pickles transformations into worker processes, which this transform refuses (one
    process holds the model and the memory's single-writer lock).
    """

    memory: Any = Field(exclude=True, description="A ParametricMemory or a memory folder.")
    on_conflict: Literal["replace", "error"] = Field(
        default="replace", description="What to do when a node id is held with other text."
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
        """What the memory holds (its document ids and content hashes, hashed): part of the
        pipeline cache key, so a cached run is reused only while the memory is unchanged."""
        documents = self.memory.documents
        digest = hashlib.sha256()
        for doc_id in sorted(documents):
            digest.update(f"{doc_id}\0{documents[doc_id].content_hash}\n".encode())
        return f"{len(documents)} documents, {digest.hexdigest()[:16]}"

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

    def consolidate(self, nodes: Sequence[BaseNode]) -> IngestReport:
        """Write the nodes' text into the memory; returns the memory's report."""
        planned: dict[str, tuple[str, dict[str, str]]] = {}
        for node in nodes:
            text = node.get_content(metadata_mode=self.metadata_mode)
            if not text or not text.strip():
                continue  # image nodes, empty splits: nothing to consolidate
            planned[node.node_id] = (text, _string_metadata(node))
        if not planned:
            return IngestReport()
        with model_lock(self.memory):
            held = self.memory.documents
            for doc_id, (text, _) in planned.items():
                record = held.get(doc_id)
                if record is None:
                    continue
                if record.content_hash == content_hash(validate_text(text, f"node {doc_id!r}")):
                    continue
                if self.on_conflict == "error":
                    raise InvalidDocumentError(
                        f"the memory holds node {doc_id!r} with other text; pass "
                        "on_conflict='replace' or delete it first"
                    )
                logger.info("replacing memory document %r (its text changed)", doc_id)
                self.memory.delete_document(doc_id, progress=self.progress)
            return self.memory.add_documents(
                [text for text, _ in planned.values()],
                ids=list(planned),
                metadatas=[metadata for _, metadata in planned.values()],
                progress=self.progress,
            )


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


def _string_metadata(node: BaseNode) -> dict[str, str]:
    metadata = {
        str(key): str(value)
        for key, value in node.metadata.items()
        if isinstance(value, (str, int, float, bool))
    }
    if node.ref_doc_id:
        metadata["ref_doc_id"] = node.ref_doc_id
    return metadata
