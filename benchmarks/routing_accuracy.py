"""How often the router sends a question to the shard that holds its passage, and what a
wrong route costs (no model needed for the first part; CPU, seconds to a minute).

For quality.py's sample of N passages (same seed, same questions), each passage chunked as a
memory chunks it, BM25 over the chunks with and without stemming: the share of questions whose
best chunk (top-1) or one of the best 3 (top-3) belongs to the question's own passage. With
`--quality` (a quality.json holding memory/stream records of the same sample, shards of
`--per-shard`), the stream's accuracy is split into questions routed right and wrong, beside
memory/doc on the same questions: stream/doc = routing x retention.

    python benchmarks/routing_accuracy.py --n 10 100 1048 \\
        --quality benchmarks/results/quality/squad-n100/quality.json \\
        --out benchmarks/results/routing
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import load_documents
from quality import SQUAD, sample_documents

from parametric_memory.config import ChunkingConfig
from parametric_memory.engine.models import converted_default_model
from parametric_memory.method.chunking import chunk_document
from parametric_memory.routing import bm25s, tokenize


def main() -> None:
    args = _parse_args()
    documents = load_documents(args.data)
    count_tokens = default_token_counter()
    rows = []
    for n in args.n:
        sample = sample_documents(documents, n, args.seed, args.questions_per_doc)
        for stemmed in (False, True):
            rows.append(routing_row(sample, count_tokens, stemmed, args.chunk_tokens))
            print(json.dumps(rows[-1]), flush=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    if args.quality:
        result["stream_split"] = stream_split(args.quality, documents, args, count_tokens)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing.json").write_text(json.dumps(result, indent=2))
    (args.out / "routing.md").write_text(render_markdown(result))
    print(render_markdown(result))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--n", type=int, nargs="+", default=[10, 100, 1048])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions-per-doc", type=int, default=5)
    parser.add_argument("--chunk-tokens", type=int, default=ChunkingConfig().chunk_tokens)
    parser.add_argument(
        "--quality",
        type=Path,
        nargs="+",
        help="quality.json with memory/stream records (then others of the same sample, "
        "for memory/doc and in-prompt)",
    )
    parser.add_argument("--per-shard", type=int, default=4, help="documents per shard there")
    parser.add_argument(
        "--stemmed-routing",
        action="store_true",
        help="that stream was asked with stemmed routing (code from 63ab707 on)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/routing"))
    return parser.parse_args()


def default_token_counter():
    """Counts tokens of the default model's tokenizer, as a memory chunks with it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(converted_default_model())
    return lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)


def routing_row(sample: list[dict], count_tokens, stemmed: bool, chunk_tokens: int) -> dict:
    passage_of_chunk, ranked = _rank(sample, count_tokens, stemmed, chunk_tokens, k=3)
    own = [i for i, document in enumerate(sample) for _ in document["questions"]]
    top1 = sum(passage_of_chunk[row[0]] == i for i, row in zip(own, ranked, strict=True))
    top3 = sum(i in {passage_of_chunk[c] for c in row} for i, row in zip(own, ranked, strict=True))
    return {
        "n": len(sample),
        "stemmed": stemmed,
        "questions": len(own),
        "chunks": len(passage_of_chunk),
        "top1": top1 / len(own),
        "top3": top3 / len(own),
    }


def _rank(sample, count_tokens, stemmed, chunk_tokens, k):
    """(passage index of each chunk, each question's best k chunk indices)."""
    chunks = [
        (i, chunk.text)
        for i, document in enumerate(sample)
        for chunk in chunk_document(
            str(i), f"{i:016d}", document["text"], chunk_tokens, count_tokens
        )
    ]
    words = tokenize if stemmed else _plain_words
    index = bm25s.BM25()
    index.index(words([text for _, text in chunks]), show_progress=False)
    questions = [q["question"] for document in sample for q in document["questions"]]
    best, _ = index.retrieve(words(questions), k=min(k, len(chunks)), show_progress=False)
    return [i for i, _ in chunks], [[int(c) for c in row] for row in best]


def _plain_words(texts):
    return bm25s.tokenize(list(texts), stopwords="en", show_progress=False)


def stream_split(paths: list[Path], documents: list[dict], args, count_tokens) -> dict:
    """memory/stream (and memory/doc, where the file has it) accuracy on questions the router,
    with the words that stream was asked with, sent to the right shard and to a wrong one."""
    results = [json.loads(path.read_text()) for path in paths]
    setup = results[0]["setup"]
    sample = sample_documents(documents, setup["n"], setup["seed"], setup["questions_per_doc"])
    passage_of_chunk, ranked = _rank(
        sample, count_tokens, args.stemmed_routing, args.chunk_tokens, k=1
    )
    routed = [passage_of_chunk[row[0]] // args.per_shard for row in ranked]
    keys = [
        (i, j) for i, document in enumerate(sample) for j, _ in enumerate(document["questions"])
    ]
    by_mode: dict[str, dict] = {}
    for result in results:
        for mode, records in result["records"].items():
            by_mode.setdefault(
                mode, {(r["doc_index"], r["question_index"]): r["contains"] for r in records}
            )
    split = {}
    for label, right in (("routed right", True), ("routed wrong", False)):
        picked = [
            k for k, s in zip(keys, routed, strict=True) if (s == k[0] // args.per_shard) == right
        ]
        split[label] = {"questions": len(picked)} | {
            mode: sum(by_mode[mode][k] for k in picked) / max(len(picked), 1)
            for mode in ("stream", "doc", "in-prompt")
            if mode in by_mode
        }
    words = "stemmed" if args.stemmed_routing else "plain"
    return {
        "quality": " + ".join(map(str, paths)),
        "per_shard": args.per_shard,
        "words": words,
    } | split


def render_markdown(result: dict) -> str:
    lines = [
        "# Routing accuracy (BM25 over chunks)",
        "",
        "| passages | words | questions | top-1 (routed right) | top-3 |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        words = "stemmed" if row["stemmed"] else "plain"
        lines.append(
            f"| {row['n']} | {words} | {row['questions']} | {row['top1']:.1%} | {row['top3']:.1%} |"
        )
    split = result.get("stream_split")
    if split:
        lines += [
            "",
            f"Split of `{split['quality']}`",
            f"(shards of {split['per_shard']}, routed with {split['words']} words):",
            "",
            "| questions | count | memory/stream | memory/doc | in-prompt |",
            "|---|---|---|---|---|",
        ]
        for label in ("routed right", "routed wrong"):
            row = split[label]
            cells = " | ".join(
                f"{row[m]:.1%}" if m in row else "" for m in ("stream", "doc", "in-prompt")
            )
            lines.append(f"| {label} | {row['questions']} | {cells} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
