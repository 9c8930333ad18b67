"""How many chunks each of the first 1,048 squad-dev passages has (256-token chunks, the
default model's tokenizer), and what that meant for the groups of 128 consolidated together
in ingest order and in the planned order (fewest chunks, then shortest, first), for the two
parts the 1,048-passage run ingested (500, then 548).

    cd benchmarks/results/speed/2026-11-28-fewest-chunks-first
    PYTHONPATH=../../../../src python chunk_counts.py DATA
"""

import json
import sys
from collections import Counter

from transformers import AutoTokenizer

from parametric_memory.engine.models import converted_default_model
from parametric_memory.method.chunking import chunk_document

GROUP = 128


def main() -> None:
    tokenizer = AutoTokenizer.from_pretrained(converted_default_model())

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    with open(sys.argv[1]) as lines:
        passages = [json.loads(line)["context"] for line in lines][:1048]
    chunks = [len(chunk_document(str(i), str(i), p, 256, count)) for i, p in enumerate(passages)]
    print("passages by chunk count:", dict(sorted(Counter(chunks).items())))
    for part in (range(0, 500), range(500, 1048)):
        planned = sorted(part, key=lambda i: (chunks[i], len(passages[i])))
        for name, order in (("ingest order", list(part)), ("planned", planned)):
            groups = [order[start : start + GROUP] for start in range(0, len(order), GROUP)]
            summary = [
                f"{len(g)} passages, longest {max(chunks[i] for i in g)} chunks, "
                f"{sum(chunks[i] > 1 for i in g)} longer than one"
                for g in groups
            ]
            print(f"passages {part.start}-{part.stop - 1}, {name}:", "; ".join(summary))


if __name__ == "__main__":
    main()
