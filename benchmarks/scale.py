"""The cost of a long context streamed into memory (issue 28): a synthetic corpus of invented
facts (generated text: every sentence a fresh fact about a made-up entity) as a few long
documents, ingested into one memory in one call. Reports tokens, seconds, tokens/s, shards,
adapter bytes and peak GPU memory; with --limit-seconds the ingest is stopped there (its
committed sections stay) and the rate extrapolates the full corpus.

    python benchmarks/scale.py --tokens 2000000 --documents 4 --memory /root/mem/scale \\
        --limit-seconds 480 --out /root/res/scale
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import time
from pathlib import Path

import torch

from parametric_memory import MemoryConfig, ParametricMemory

log = logging.getLogger("scale")

_NAMES = ["Quor", "Brisk", "Tal", "Vend", "Oxle", "Marr", "Fenn", "Hadd", "Lisk", "Zorb"]
_ENDS = ["vell", "wick", "haven", "mere", "stead", "holt", "bury", "gate", "ford", "reach"]
_SUBJECTS = ["the mill", "the ferry", "the archive", "the guild", "the observatory", "the fair"]
_FACTS = [
    "{s} of {p} was founded in {y} by {n}.",
    "{n} keeps the keys to {s} of {p} and has done so since {y}.",
    "Every {m}, {s} of {p} opens its doors at {h}:{mm}.",
    "{s} of {p} holds {k} ledgers, the oldest bound in {c} leather.",
    "Visitors to {s} of {p} are greeted by a {c} banner showing a {a}.",
]
_MONTHS = ["January", "March", "May", "July", "September", "November"]
_COLOURS = ["teal", "amber", "violet", "crimson", "slate", "ochre"]
_ANIMALS = ["heron", "otter", "lynx", "stag", "kestrel", "badger"]


def synthetic_text(words: int, rng: random.Random) -> str:
    """About `words` words of invented facts, in paragraphs under section headings."""
    out: list[str] = []
    count = 0
    while count < words:
        place = rng.choice(_NAMES) + rng.choice(_ENDS)
        paragraph = [f"## {place}"]
        for _ in range(rng.randint(4, 8)):
            sentence = rng.choice(_FACTS).format(
                s=rng.choice(_SUBJECTS),
                p=place,
                y=rng.randint(1600, 2020),
                n=f"{rng.choice(_NAMES)}{rng.choice(_ENDS)} {rng.choice(_NAMES)}",
                m=rng.choice(_MONTHS),
                h=rng.randint(6, 11),
                mm=rng.choice(["00", "15", "30", "45"]),
                k=rng.randint(3, 900),
                c=rng.choice(_COLOURS),
                a=rng.choice(_ANIMALS),
            )
            paragraph.append(sentence)
            count += len(sentence.split())
        out.append("\n".join(paragraph))
    return "\n\n".join(out)


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rng = random.Random(0)
    words = int(args.tokens / args.tokens_per_word / args.documents)
    texts = [synthetic_text(words, rng) for _ in range(args.documents)]
    config = MemoryConfig.model_validate(json.loads(args.config))
    memory = ParametricMemory.create(args.memory, config, exist_ok=True)
    tokenizer = memory.model.tokenizer
    tokens = sum(len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts)
    log.info("%d documents, %d tokens", len(texts), tokens)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    stopped = _ingest_until(memory, texts, args.limit_seconds)
    seconds = time.perf_counter() - started
    info = ParametricMemory.open(args.memory).info()
    result = {
        "documents": len(texts),
        "corpus_tokens": tokens,
        "ingested_tokens": info.tokens,
        "seconds": round(seconds, 1),
        "tokens_per_s": round(info.tokens / seconds, 1),
        "stopped_at_limit": stopped,
        "hours_for_the_corpus": round(tokens / max(info.tokens, 1) * seconds / 3600, 2),
        "shards": info.shards,
        "adapter_bytes": info.adapter_bytes,
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
        if torch.cuda.is_available()
        else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def _ingest_until(memory: ParametricMemory, texts: list[str], limit: float | None) -> bool:
    """One `add_documents` call, stopped after `limit` seconds (True if it was stopped)."""

    def stop(_signum: int, _frame: object) -> None:
        raise TimeoutError

    if limit:
        signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        ids = [f"synthetic-{i}" for i in range(len(texts))]
        memory.add_documents(texts, ids=ids)
        return False
    except TimeoutError:
        return True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2_000_000, help="corpus size wanted")
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--tokens-per-word", type=float, default=1.6, help="for sizing only")
    parser.add_argument("--limit-seconds", type=float, help="stop the ingest after this long")
    parser.add_argument("--memory", type=Path, required=True)
    parser.add_argument("--config", default="{}", help="MemoryConfig overrides, JSON")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


if __name__ == "__main__":
    main()
