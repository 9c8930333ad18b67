"""Long documents measured (issue 28): squad-dev's articles, each article's passages joined in
file order into ONE document (or, with --one-document, every passage in one document),
ingested into one memory, where a long document is cut into sections of a shard each. Every
passage's first --questions-per-doc questions are answered from it with the top 1, 2 and 3
shards; beside them, the same questions from a memory of the passages added one by one
(--passages, e.g. `compaction.py --n 1048`'s level 0), the gold passage in the prompt, and
BM25's top 3 chunks of the joined documents (256 tokens, the memory's chunking) in the prompt.

    python benchmarks/long_documents.py --memory /root/mem/articles \\
        --passages /root/mem/n1048/level0 --out /root/res/articles
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from answering import measure
from common import MAX_ANSWER_TOKENS, answer_prompts, load_documents, open_book_prompt
from quality import RAG_TOP_K, SQUAD, questions_of
from retrieval import rank_passages

from parametric_memory import MemoryConfig, ParametricMemory
from parametric_memory.engine.models import load_model
from parametric_memory.method.chunking import chunk_text

log = logging.getLogger("long_documents")


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    passages = [
        {**p, "questions": p["questions"][: args.questions_per_doc or None]}
        for p in load_documents(args.data)
    ]
    joined = join_articles(passages, args.one_document)
    result: dict = {"documents": len(joined), "passages": len(passages), "rows": {}}
    memory, result["ingest"] = ingest(joined, args.memory, json.loads(args.config))
    questions = questions_of(passages, range(len(passages)))
    texts = [q["question"] for _, _, q in questions]
    answerers: dict[str, tuple[Callable[[Sequence[str]], list[str]], list[str]]] = {
        f"long-top{k}": (_asking(memory, k), texts) for k in (1, 2, 3)
    }
    if args.passages is not None:
        answerers["passages-top1"] = (_asking(ParametricMemory.open(args.passages), 1), texts)
    lm = load_model(memory.config)
    answerers["in-prompt"] = (
        lambda batch: answer_prompts(lm, batch),
        [open_book_prompt([passages[i]["text"]], q["question"]) for i, _, q in questions],
    )
    chunks = [c for d in joined for c in _chunks(d["text"], lm.tokenizer)]
    ranked = rank_passages(chunks, texts, RAG_TOP_K)
    answerers["rag-chunks"] = (
        lambda batch: answer_prompts(lm, batch),
        [
            open_book_prompt([chunks[k] for k in top], t)
            for top, t in zip(ranked, texts, strict=True)
        ],
    )
    for mode, (answer, prompts) in answerers.items():
        row, records = measure(answer, prompts, passages, questions, latency_questions=0)
        result["rows"][mode] = row
        (args.out / f"records-{mode}.json").write_text(json.dumps(records, ensure_ascii=False))
        log.info("%s: %s", mode, row)
        (args.out / "long_documents.json").write_text(json.dumps(result, indent=1))


def join_articles(passages: list[dict], one_document: bool) -> list[dict]:
    """Each article's passages joined in file order under its title (a heading line), or
    all of them in one document."""
    articles: dict[str, list[str]] = {}
    for passage in passages:
        title = "all" if one_document else passage["title"]
        articles.setdefault(title, []).append(passage["text"])
    return [
        {"id": title, "text": f"# {title}\n\n" + "\n\n".join(texts)}
        for title, texts in articles.items()
    ]


def ingest(documents: list[dict], folder: Path, config: dict) -> tuple[ParametricMemory, dict]:
    """One `add_documents` call (a rerun resumes: committed sections are kept)."""
    memory = ParametricMemory.create(folder, MemoryConfig.model_validate(config), exist_ok=True)
    started = time.perf_counter()
    memory.add_documents([d["text"] for d in documents], ids=[d["id"] for d in documents])
    seconds = time.perf_counter() - started
    info = memory.info()
    log.info("ingested %d documents (%d tokens) in %.1fs", info.documents, info.tokens, seconds)
    return memory, {
        "seconds": round(seconds, 1),
        "tokens": info.tokens,
        "tokens_per_s": round(info.tokens / max(seconds, 1e-9), 1),
        "shards": info.shards,
        "adapter_bytes": info.adapter_bytes,
    }


def _asking(memory: ParametricMemory, k: int) -> Callable[[Sequence[str]], list[str]]:
    return lambda batch: memory.ask_batch(
        list(batch), max_new_tokens=MAX_ANSWER_TOKENS, shards_per_question=k
    )


def _chunks(text: str, tokenizer) -> list[str]:
    """The text in the memory's default chunks (256 tokens, sentence-aligned)."""
    size = MemoryConfig().chunking.chunk_tokens
    return chunk_text(text, size, lambda t: len(tokenizer(t, add_special_tokens=False).input_ids))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--memory", type=Path, required=True, help="the long documents' memory")
    parser.add_argument("--passages", type=Path, help="a memory of the passages one by one")
    parser.add_argument("--one-document", action="store_true", help="all passages, one document")
    parser.add_argument("--questions-per-doc", type=int, default=1)
    parser.add_argument("--config", default="{}", help="MemoryConfig overrides, JSON")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


if __name__ == "__main__":
    main()
