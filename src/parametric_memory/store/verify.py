"""Integrity check of a memory folder without loading the model: manifest schema, file
hashes, adapter tensor shapes against the recorded base model and LoRA rank, and the chunk
and transfer-item records against the documents the manifest lists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from safetensors import SafetensorError, safe_open

from .. import store
from ..errors import MemoryNotFoundError, ParametricMemoryError
from ..records import Chunk, TransferItem


def verify_memory(path: str | Path) -> list[str]:
    """Problems found (empty when the memory is sound). Raises only if there is no memory."""
    root = Path(path)
    try:
        manifest = store.read_manifest(root)
    except MemoryNotFoundError:
        raise
    except ParametricMemoryError as error:
        return [str(error)]
    problems = []
    for relative, expected in manifest.files.items():
        file = root / relative
        if not file.is_file():
            problems.append(f"missing file {relative}")
        elif store.file_sha256(file) != expected:
            problems.append(f"hash mismatch in {relative}")
    if manifest.state is not None and not problems:
        for shard in sorted({record.shard for record in manifest.documents.values()}):
            weights = store.shard_weights(root, manifest, shard)
            if weights is None:
                problems.append(f"shard {shard} holds documents but has no adapter weights")
            else:
                problems += _check_adapter(weights, manifest)
    if not problems:
        problems += record_problems(root, manifest)
    return problems


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


def _check_adapter(weights: Path, manifest: store.Manifest) -> list[str]:
    """Every LoRA tensor has the rank the manifest's config gives."""
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
    return problems
