"""LlamaIndex's starter program with the vector index swapped for a parametric memory.

`ParametricMemoryIndex.from_documents` trains the documents into a LoRA adapter of a local
model (no embeddings, no stored nodes); the query engine answers from those weights, and
the retriever shows what the memory recalls. Run it again with the same `--memory` and
nothing is retrained: the memory already holds the document, in the same version.

    python examples/llamaindex_ingest_query.py                      # default model (CPU: minutes)
    python examples/llamaindex_ingest_query.py --memory my-memory   # keep it, re-run: no training
    python examples/llamaindex_ingest_query.py --model PATH --fast  # tiny settings (tests)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from llama_index.core import Document
from llama_index.indices.managed.parametric_memory import ParametricMemoryIndex

from parametric_memory import MemoryConfig

TEXT = (
    "Brindlewick is a river town with 27 bridges. "
    "Its oldest bridge, the Copper Span, opened in 1790."
)
QUESTION = "How many bridges does Brindlewick have?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="base model (default: SmolLM2)")
    parser.add_argument("--fast", action="store_true", help="tiny settings (for tests)")
    parser.add_argument("--memory", type=Path, help="memory folder (default: a temp folder)")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()
    args.memory = args.memory or Path(tempfile.mkdtemp(prefix="llamaindex-")) / "memory"
    tiny = {"elicitation": {"max_answer_tokens": 8}, "consolidation": {"epochs": 1}}
    config = MemoryConfig(model=args.model, **(tiny if args.fast else {}))

    # or SimpleDirectoryReader("data", filename_as_id=True).load_data(): stable ids, so a
    # re-run finds the documents already held
    documents = [Document(text=TEXT, id_="brindlewick", metadata={"file_name": "brindlewick.txt"})]
    started = time.perf_counter()
    # index = VectorStoreIndex.from_documents(documents)
    index = ParametricMemoryIndex.from_documents(documents, memory_path=args.memory, config=config)
    info = index.memory.info()
    print(
        f"memory {args.memory}: {info.documents} document(s), last trained {info.updated_at} "
        f"({time.perf_counter() - started:.1f}s)"
    )

    hits = index.as_retriever(similarity_top_k=1).retrieve(args.question)
    for hit in hits:
        print(f"recalled: {hit.node.get_content()!r}")
    response = index.as_query_engine().query(args.question)
    print(f"question: {args.question}")
    print(f"answer: {str(response)!r}")
    print(f"sources: {sorted({hit.node.metadata.get('file_name', '?') for hit in hits})}")


if __name__ == "__main__":
    main()
