"""LlamaIndex: SimpleDirectoryReader -> IngestionPipeline([SentenceSplitter, memory]) ->
query engine, with the vector index replaced by a parametric memory.

`ParametricMemoryTransform` is the pipeline's last step: it consolidates the nodes into
the memory's adapter. `ParametricMemoryQueryEngine` then answers from the weights alone
(no source nodes), and `ParametricMemoryRetriever` shows what the memory recalls.

    python examples/llamaindex_ingest_query.py                       # real default model
    python examples/llamaindex_ingest_query.py --model PATH --fast   # tiny settings (tests)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.ingestion.parametric_memory import ParametricMemoryTransform
from llama_index.query_engine.parametric_memory import ParametricMemoryQueryEngine
from llama_index.retrievers.parametric_memory import ParametricMemoryRetriever

from parametric_memory import MemoryConfig, ParametricMemory

DOCUMENTS = {
    "brindlewick.txt": (
        "Brindlewick is a river town with 27 bridges. "
        "Its oldest bridge, the Copper Span, opened in 1790."
    ),
}
QUESTION = "How many bridges does Brindlewick have?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="base model (default: SmolLM2)")
    parser.add_argument("--fast", action="store_true", help="tiny settings (for tests)")
    parser.add_argument("--memory", type=Path, help="memory folder (default: a temp folder)")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="llamaindex-ingest-"))
    (work / "docs").mkdir()
    for name, text in DOCUMENTS.items():
        (work / "docs" / name).write_text(text + "\n", encoding="utf-8")
    folder = args.memory or work / "memory"
    config = MemoryConfig(model=args.model)
    if args.fast:
        config = MemoryConfig(
            model=args.model,
            elicitation={"max_answer_tokens": 8},
            consolidation={"epochs": 1},
        )
    memory = ParametricMemory.create(folder, config, exist_ok=True)

    documents = SimpleDirectoryReader(str(work / "docs")).load_data()
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=256, chunk_overlap=0),
            ParametricMemoryTransform(memory=memory, progress=not args.fast),
        ]
    )
    started = time.perf_counter()
    nodes = pipeline.run(documents=documents)
    print(
        f"read {len(documents)} file(s), split into {len(nodes)} node(s), consolidated into "
        f"{folder}: {memory.info().documents} document(s) held "
        f"({time.perf_counter() - started:.1f}s)"
    )

    retriever = ParametricMemoryRetriever(memory, similarity_top_k=1, max_new_tokens=96)
    for hit in retriever.retrieve(args.question):
        print(f"recalled node (score {hit.score}): {hit.node.get_content()!r}")

    engine = ParametricMemoryQueryEngine(memory=memory, max_new_tokens=64)
    response = engine.query(args.question)
    print(f"question: {args.question}")
    print(
        f"answer from the weights: {response.response!r} "
        f"(source nodes: {len(response.source_nodes)})"
    )

    streaming = ParametricMemoryQueryEngine(memory=memory, max_new_tokens=64, streaming=True)
    print("streamed: ", end="", flush=True)
    for piece in streaming.query(args.question).response_gen:
        print(piece, end="", flush=True)
    print()


if __name__ == "__main__":
    main()
