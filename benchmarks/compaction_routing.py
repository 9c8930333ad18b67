"""How often the router picks the shard that holds a question's passage, when passages are
grouped into compacted shards as `compact()` groups them (no model needed; CPU, a minute).

For quality.py's sample of N passages (same seed and questions), each passage chunked as a
memory chunks it, the memory's own `ShardRouter` over the chunks, shards made by
`grouping.group_related` at each group size (1 = a shard per passage, level 0): the share of
questions routed to the shard holding their passage, and how many of a group's passages
share its most common SQuAD article (purity).

    python benchmarks/compaction_routing.py --n 100 1048 --sizes 1 8 32 64 128 \\
        --out benchmarks/results/compaction/routing
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from common import load_documents
from quality import SQUAD, sample_documents
from routing_accuracy import default_token_counter

from parametric_memory.config import ChunkingConfig
from parametric_memory.grouping import group_related
from parametric_memory.method.chunking import chunk_document
from parametric_memory.records import content_hash
from parametric_memory.routing import ShardRouter


def main() -> None:
    args = _parse_args()
    documents = load_documents(args.data)
    count_tokens = default_token_counter()
    rows = []
    for n in args.n:
        sample = sample_documents(documents, n, args.seed, args.questions_per_doc)
        chunks = [
            chunk
            for d in sample
            for chunk in chunk_document(
                d["id"], content_hash(d["text"]), d["text"], args.chunk_tokens, count_tokens
            )
        ]
        for size in args.sizes:
            rows.append(routing_row(sample, chunks, size))
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    (args.out / "routing.json").write_text(json.dumps(result, indent=2))
    (args.out / "routing.md").write_text(render_markdown(result))
    print(render_markdown(result))


def routing_row(sample: list[dict], chunks: list, size: int) -> dict:
    texts = {d["id"]: d["text"] for d in sample}
    groups = group_related(texts, size) if size > 1 else [[doc] for doc in texts]
    shard_of = {doc: shard for shard, group in enumerate(groups) for doc in group}
    router = ShardRouter(chunks, shard_of)
    questions = [(q["question"], d["id"]) for d in sample for q in d["questions"]]
    routed = router.shards_for([question for question, _ in questions])
    right = sum(shard == shard_of[doc] for shard, (_, doc) in zip(routed, questions, strict=True))
    title = {d["id"]: d["title"] for d in sample}
    pure = sum(Counter(title[doc] for doc in group).most_common(1)[0][1] for group in groups)
    return {
        "n": len(sample),
        "group_size": size,
        "shards": len(groups),
        "questions": len(questions),
        "routed_to_the_right_shard": round(right / len(questions), 4),
        "article_purity": round(pure / len(sample), 4),
    }


def render_markdown(result: dict) -> str:
    lines = [
        "# Routing to compacted shards (BM25 top-1 chunk, squad-dev)",
        "",
        "| passages | documents per shard | shards | questions | routed to the right shard "
        "| article purity |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['n']} | {row['group_size']} | {row['shards']} | {row['questions']} "
            f"| {100 * row['routed_to_the_right_shard']:.1f}% "
            f"| {100 * row['article_purity']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1048])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--questions-per-doc", type=int, default=5)
    parser.add_argument("--chunk-tokens", type=int, default=ChunkingConfig().chunk_tokens)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compaction/routing"))
    return parser.parse_args()


if __name__ == "__main__":
    main()
