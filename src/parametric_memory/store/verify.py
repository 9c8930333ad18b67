"""Integrity check of a memory folder without loading the model: manifest schema and the
paths it names, file hashes, adapter tensor shapes against the recorded base model and LoRA
rank, finite adapter weights, and the chunk and transfer-item records against the documents
the manifest lists."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from .. import store
from ..errors import MemoryNotFoundError, ParametricMemoryError
from ..records import Chunk, TransferItem
from .paths import read_regular

_EXPONENT_BITS = {
    "F16": ("<u2", 0x7C00),
    "BF16": ("<u2", 0x7F80),
    "F32": ("<u4", 0x7F80_0000),
    "F64": ("<u8", 0x7FF0_0000_0000_0000),
}
"""safetensors' float dtypes read as unsigned integers, and their exponent bits: a value
with all of them set is NaN or infinite. As bits, bf16 needs no torch (which the store
does not import)."""


def verify_memory(path: str | Path) -> list[str]:
    """Problems found (empty when the memory is sound). Raises only if there is no memory."""
    root = Path(path)
    try:
        manifest = store.read_manifest(root)
    except MemoryNotFoundError:
        raise
    except ParametricMemoryError as error:
        return [str(error)]
    problems = [p for rel, digest in manifest.files.items() for p in _hash(root, rel, digest)]
    if manifest.state is not None and not problems:
        for shard in sorted({s for record in manifest.documents.values() for s in record.shards}):
            weights = store.shard_weights(root, manifest, shard)
            if weights is None:
                problems.append(f"shard {shard} holds documents but has no adapter weights")
            else:
                problems += _check_adapter(weights, manifest, weights.relative_to(root))
    if not problems:
        problems += record_problems(root, manifest)
    return problems


def _hash(root: Path, relative: str, expected: str) -> list[str]:
    """The problem with one file of the state (`read_manifest` checked its path), if any."""
    try:
        digest = store.file_sha256(root / relative)
    except FileNotFoundError:
        return [f"missing file {relative}"]
    except (OSError, ParametricMemoryError) as error:
        return [f"cannot read {relative}: {error}"]
    return [] if digest == expected else [f"hash mismatch in {relative}"]


def record_problems(root: Path, manifest: store.Manifest) -> list[str]:
    """Every document listed has its chunk records, and no record outlives its document."""
    try:
        chunks = store.read_chunks(root, manifest)
        items = store.read_transfer_set(root, manifest)
    except (ParametricMemoryError, TypeError) as error:  # TypeError: a line is not a record
        return [f"unreadable records: {error}"]
    return records_disagreement(manifest, chunks, items)


def records_disagreement(
    manifest: store.Manifest, chunks: list[Chunk], items: list[TransferItem]
) -> list[str]:
    """Where the manifest and its state's (already read) records disagree."""
    if manifest.documents and manifest.state is None:
        return [f"the manifest lists {len(manifest.documents)} document(s) but no state"]
    per_document = Counter(chunk.document_id for chunk in chunks)
    problems = [
        f"document {doc_id!r} has {per_document[doc_id]} chunk records, the manifest says "
        f"{record.chunks}"
        for doc_id, record in manifest.documents.items()
        if per_document[doc_id] != record.chunks
    ]
    unlisted = sorted(set(per_document) - set(manifest.documents))
    if unlisted:
        problems.append(f"records of documents the manifest does not list: {unlisted}")
    chunk_ids = {chunk.id for chunk in chunks}
    orphans = sum(item.chunk_id not in chunk_ids for item in items)
    if orphans:
        problems.append(f"{orphans} transfer items of chunks the memory does not hold")
    return problems


def _check_adapter(weights: Path, manifest: store.Manifest, name: Path) -> list[str]:
    """Every LoRA tensor has the rank the manifest's config gives and finite values."""
    rank = manifest.config.consolidation.lora_rank
    try:
        with safe_open(str(weights), framework="pt") as handle:
            shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}  # noqa: SIM118
    except (OSError, SafetensorError) as error:
        return [f"adapter weights unreadable: {error}"]
    problems = []
    for key, shape in shapes.items():
        if "lora_A" in key and shape[0] != rank:
            problems.append(f"{key}: rank {shape[0]}, manifest says {rank}")
        if "lora_B" in key and shape[-1] != rank:
            problems.append(f"{key}: rank {shape[-1]}, manifest says {rank}")
    if not shapes:
        problems.append("adapter weights hold no tensors")
    return problems + [
        f"{name}: tensor {key} holds NaN or infinite values; forget the documents of its "
        "shard and add them again"
        for key in _non_finite_tensors(weights)
    ]


def _non_finite_tensors(weights: Path) -> list[str]:
    """Names of the float tensors of a safetensors file holding a NaN or an infinity."""
    data = read_regular(weights)
    start = 8 + int.from_bytes(data[:8], "little")
    header = json.loads(data[8:start])
    found = []
    for key, entry in header.items():
        if key == "__metadata__" or entry["dtype"] not in _EXPONENT_BITS:
            continue
        dtype, exponent = _EXPONENT_BITS[entry["dtype"]]
        begin, end = entry["data_offsets"]
        count = (end - begin) // np.dtype(dtype).itemsize
        bits = np.frombuffer(data, dtype=dtype, count=count, offset=start + begin)
        if np.any((bits & exponent) == exponent):
            found.append(key)
    return found
