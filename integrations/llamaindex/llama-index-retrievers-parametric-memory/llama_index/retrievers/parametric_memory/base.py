"""`ParametricMemoryRetriever`: a drop-in for `index.as_retriever()` whose nodes are text
the memory writes out from its weights (no vector search, no stored passages)."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import (
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

from parametric_memory import ParametricMemory
from parametric_memory.integration import (
    PROVENANCE_KEYS,
    passage_metadata,
    recall_passages,
    resolve_memory,
)

_HIDDEN_KEYS = [*PROVENANCE_KEYS, "ref_doc_id", "ref_doc_hash"]
"""Metadata keys left out of the text the LLM and embeddings see: the provenance, and the
`ref_doc_id` (the node's source relationship gives it) and `ref_doc_hash` (the source
document's version) the ingestion transform records."""


class ParametricMemoryRetriever(BaseRetriever):
    """Retrieve by recall: each node's text is what the memory produces about the query.

    The first node is `memory.recall(query)`; when `similarity_top_k > 1` the others answer
    rephrasings of the query (`ask`), identical texts dropped, so fewer nodes come back when
    the memory has nothing different to say. Scores are ranks (1, 1/2, 1/3, ...), not
    similarities. Each node costs one generation of up to `max_new_tokens` tokens; a memory
    holding no documents returns none.

    A node's metadata is that of the held document its text matches best (for nodes the
    `ParametricMemoryTransform` consolidated, the source node's metadata, e.g. `file_name`),
    plus its provenance (`memory`, `document_ids`, `recalled`, `recall_kind`,
    `recall_prompt`, hidden from the LLM); its `ref_doc_id` is the source document's.
    """

    def __init__(
        self,
        memory: ParametricMemory | str,
        similarity_top_k: int = 1,
        max_new_tokens: int = 192,
        callback_manager: CallbackManager | None = None,
        **kwargs: Any,
    ) -> None:
        if similarity_top_k < 1:
            raise ValueError(f"similarity_top_k must be at least 1, got {similarity_top_k}")
        self.memory = resolve_memory(memory)
        self.similarity_top_k = similarity_top_k
        self.max_new_tokens = max_new_tokens
        super().__init__(callback_manager=callback_manager, **kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        passages = recall_passages(
            self.memory, query_bundle.query_str, self.similarity_top_k, self.max_new_tokens
        )
        documents = self.memory.documents if passages else {}
        results = []
        for rank, passage in enumerate(passages):
            best = next((d for d in passage.document_ids if d in documents), None)
            held = dict(documents[best].metadata) if best is not None else {}
            node = TextNode(
                text=passage.text,
                metadata=passage_metadata(self.memory, passage, held),
                excluded_llm_metadata_keys=_HIDDEN_KEYS,
                excluded_embed_metadata_keys=_HIDDEN_KEYS,
            )
            if best is not None:  # cite the source document (or the held one itself)
                source = held.get("ref_doc_id") or best
                node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=source)
            results.append(NodeWithScore(node=node, score=1.0 / (rank + 1)))
        return results

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)
