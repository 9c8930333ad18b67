"""A LangChain RAG chain whose vector store is a parametric memory: one line changed.

The documents are trained into a LoRA adapter of a local model instead of being embedded;
the retriever returns what the memory recalls from its weights, and the chain's LLM is the
memory's own chat model, so everything runs offline. Run it again with the same `--memory`
and nothing is retrained: the memory already holds the document.

    python examples/langchain_rag.py                        # default model (1-3 min, CPU)
    python examples/langchain_rag.py --memory my-memory     # keep the memory, re-run: no training
    python examples/langchain_rag.py --model PATH --fast    # any local model, tiny settings
"""

from __future__ import annotations

import argparse
import tempfile
import time
from operator import itemgetter
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough
from langchain_parametric_memory import ChatParametricMemory, ParametricMemoryVectorStore

from parametric_memory import MemoryConfig

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
    args.memory = args.memory or Path(tempfile.mkdtemp(prefix="langchain-rag-")) / "memory"
    tiny = {"elicitation": {"max_answer_tokens": 8}, "consolidation": {"epochs": 1}}
    config = MemoryConfig(model=args.model, **(tiny if args.fast else {}))

    docs = [Document(id="festival", page_content=DOCUMENT, metadata={"source": "festival.txt"})]
    started = time.perf_counter()
    # vectorstore = InMemoryVectorStore.from_documents(docs, embedding=OpenAIEmbeddings())
    vectorstore = ParametricMemoryVectorStore.from_documents(
        docs, memory_path=args.memory, memory_config=config
    )
    info = vectorstore.memory.info()
    print(
        f"memory {args.memory}: {info.documents} document(s), last trained {info.updated_at} "
        f"({time.perf_counter() - started:.1f}s)"
    )

    # From here on, the usual RAG chain. Any chat model works; the memory's own runs offline.
    retriever = vectorstore.as_retriever(search_kwargs={"k": 1})
    llm = ChatParametricMemory(memory=vectorstore.memory, max_tokens=64)
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer the question using this context:\n{context}"),
            ("human", "{question}"),
        ]
    )

    def format_docs(docs: list[Document]) -> str:
        return "\n\n".join(doc.page_content for doc in docs)

    answer = (
        {
            "context": itemgetter("docs") | RunnableLambda(format_docs),
            "question": itemgetter("question"),
        }
        | prompt
        | llm
        | StrOutputParser()
    )
    # the usual "RAG with sources": the retrieved documents travel beside the answer
    chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=answer)
    result = chain.invoke(args.question)
    print(f"question: {args.question}")
    print(f"answer: {result['answer']!r}")
    print(f"sources: {sorted({doc.metadata.get('source', '?') for doc in result['docs']})}")


if __name__ == "__main__":
    main()
