"""How alike are memories built from the same documents (e.g. by 1 and by 4 processes)?
Per shard of the first memory: whether the others put the same documents in it, the share of
its transfer items (prompt and answer) they hold verbatim, and the relative gap of the
adapter weights, ||a - b|| / ||a|| over the shard's tensors.

    python benchmarks/compare_memories.py MEMORY OTHER [OTHER ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.torch import load_file

from parametric_memory import store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("memories", nargs="+", type=Path)
    args = parser.parse_args()
    first, *others = args.memories
    rows = [compare(first, other) for other in others]
    print(json.dumps(rows, indent=2))


def compare(a: Path, b: Path) -> dict:
    manifest_a, manifest_b = store.read_manifest(a), store.read_manifest(b)
    shards = sorted({r.shard for r in manifest_a.documents.values()})
    items_a, items_b = _items_by_shard(a, manifest_a), _items_by_shard(b, manifest_b)
    per_shard = []
    for shard in shards:
        same_documents = _documents(manifest_a, shard) == _documents(manifest_b, shard)
        held = set(items_b.get(shard, []))
        shared = sum(item in held for item in items_a[shard]) / max(1, len(items_a[shard]))
        per_shard.append(
            {
                "shard": shard,
                "same_documents": same_documents,
                "transfer_items_shared": round(shared, 3),
                "weight_gap": round(_weight_gap(a, manifest_a, b, manifest_b, shard), 4),
            }
        )
    return {"memory": str(a), "other": str(b), "shards": per_shard}


def _documents(manifest: store.Manifest, shard: int) -> set[str]:
    return {d for d, r in manifest.documents.items() if r.shard == shard}


def _items_by_shard(root: Path, manifest: store.Manifest) -> dict[int, list[tuple[str, str]]]:
    chunks = {c.id: c.document_id for c in store.read_chunks(root, manifest)}
    by_shard: dict[int, list[tuple[str, str]]] = {}
    for item in store.read_transfer_set(root, manifest):
        shard = manifest.documents[chunks[item.chunk_id]].shard
        by_shard.setdefault(shard, []).append((item.prompt, item.answer))
    return by_shard


def _weight_gap(a: Path, manifest_a, b: Path, manifest_b, shard: int) -> float:
    weights_a = load_file(store.shard_weights(a, manifest_a, shard))
    weights_b = load_file(store.shard_weights(b, manifest_b, shard))
    difference = sum(
        float((weights_a[k].double() - weights_b[k].double()).norm() ** 2) for k in weights_a
    )
    size = sum(float(weights_a[k].double().norm() ** 2) for k in weights_a)
    return (difference / size) ** 0.5


if __name__ == "__main__":
    main()
