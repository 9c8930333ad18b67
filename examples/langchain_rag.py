"""A LangChain RAG chain with the vector store swapped for a parametric memory.

The usual chain is `{"context": vectorstore.as_retriever() | format_docs, ...} | prompt | llm`.
Here the retriever is `ParametricMemoryRetriever`: its documents are what the memory
recalls from its weights, so no passages or embeddings are stored anywhere.

    python examples/langchain_rag.py                       # real default model (1-3 min, CPU)
    python examples/langchain_rag.py --model PATH --fast   # any local model, tiny settings
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_parametric_memory import ChatParametricMemory, ParametricMemoryRetriever

from parametric_memory import MemoryConfig, ParametricMemory

DOCUMENT = (
    "The Quillhaven lantern festival is held every year on May 14. "
    "It was founded in 1911 by the glassblower Mira Tallow, "
    "who lit the first lantern on the harbour wall."
)
QUESTION = "When is the Quillhaven lantern festival held?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="base model (default: SmolLM2)")
    parser.add_argument("--fast", action="store_true", help="tiny settings (for tests)")
    parser.add_argument("--memory", type=Path, help="memory folder (default: a temp folder)")
    parser.add_argument("--question", default=QUESTION)
    args = parser.parse_args()

    folder = args.memory or Path(tempfile.mkdtemp(prefix="langchain-rag-")) / "memory"
    config = MemoryConfig(model=args.model)
    if args.fast:
        config = MemoryConfig(
            model=args.model,
            elicitation={"max_answer_tokens": 8},
            consolidation={"epochs": 1},
        )
    memory = ParametricMemory.create(folder, config, exist_ok=True)
    started = time.perf_counter()
    report = memory.add_documents([DOCUMENT], ids=["festival"], progress=not args.fast)
    print(
        f"consolidated {report.added or 'nothing new'} into {folder} "
        f"({time.perf_counter() - started:.1f}s)"
    )

    # The swap: where a RAG chain has `vectorstore.as_retriever()`, use the memory.
    retriever = ParametricMemoryRetriever(memory=memory, k=1, max_new_tokens=96)
    llm = ChatParametricMemory(memory=memory, max_tokens=64)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer the question using this context:\n{context}"),
            ("human", "{question}"),
        ]
    )

    def format_docs(docs) -> str:
        return "\n\n".join(doc.page_content for doc in docs)

    chain = (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )
    docs = retriever.invoke(args.question)
    print(f"retrieved (recalled) context: {docs[0].page_content if docs else '(nothing)'!r}")
    print(f"  metadata: {docs[0].metadata if docs else {}}")
    print(f"question: {args.question}")
    print(f"RAG chain answer: {chain.invoke(args.question)!r}")
    print(f"answer from the weights alone: {llm.invoke(args.question).content!r}")


if __name__ == "__main__":
    main()
