"""Issue 5's multi-GPU ingest: quality.py's sample of N passages ingested by one process per
GPU under torchrun (`parametric_memory.distributed`), timed on rank 0.

    torchrun --standalone --nproc-per-node 4 benchmarks/parallel_ingest.py --passages 16 \\
        --memory $S/memory-4 --out $S/ingest-4.json

The JSON gives processes, GPUs, documents, shards, wall seconds of the whole ingest (model
loading included, as a user waits for it), documents/s and rank 0's peak GPU memory.
A memory that already holds a prefix of the sample gets the rest (so a long ingest can be
split: --passages 500, then --passages 1048 on the same memory; rates count what each run
added). Beside the memory it writes quality.py's stream progress file, so that

    python benchmarks/quality.py --n 100 --modes stream --stream-memory $S/memory-4 \\
        --checkpoints 100 --out $S/stream

asks the memory every question without ingesting again (its s/doc is then this run's wall
time over N: documents were consolidated side by side, not one after another).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from common import load_documents
from quality import SQUAD, parse_memory_config, sample_documents

from parametric_memory.cli import prefer_expandable_segments
from parametric_memory.distributed import add_documents_distributed, init_process_group
from parametric_memory.memory import ParametricMemory
from parametric_memory.records import Document


def main() -> None:
    prefer_expandable_segments()  # as the parametric-memory command does
    args = _parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    documents = sample_documents(load_documents(args.data), args.passages, args.seed, 0)
    config = args.memory_config
    init_process_group()
    try:
        dist.barrier()
        started = time.perf_counter()
        report = add_documents_distributed(
            args.memory, [Document(d["id"], d["text"]) for d in documents], config=config
        )
        dist.barrier()
        seconds = time.perf_counter() - started
        if dist.get_rank() == 0:
            _write_results(args, documents, len(report.added), seconds)
    finally:
        dist.destroy_process_group()


def _write_results(
    args: argparse.Namespace, documents: list[dict], added: int, seconds: float
) -> None:
    memory = ParametricMemory.open(args.memory, device="cpu")
    info = memory.info()
    added_tokens = sum(memory.documents[d["id"]].tokens for d in documents[-added:]) if added else 0
    result = {
        "processes": dist.get_world_size(),
        "gpus": torch.cuda.device_count(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "documents": info.documents,
        "added": added,
        "shards": info.shards,
        "sharding": args.memory_config.sharding.model_dump(),
        "tokens": info.tokens,
        "seconds": round(seconds, 2),
        "documents_per_second": round(added / seconds, 3),
        "tokens_per_second": round(added_tokens / seconds, 1),
        "adapter_bytes": info.adapter_bytes,
        "peak_gpu_bytes_rank0": _peak_gpu_bytes(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    _write_stream_progress(args.memory, memory, documents, seconds / max(1, added))


def _peak_gpu_bytes() -> int:
    return torch.cuda.max_memory_reserved() if torch.cuda.is_available() else 0


def _write_stream_progress(
    folder: Path, memory: ParametricMemory, documents: list[dict], seconds_per_document: float
) -> None:
    """quality.py's record of a finished stream over `documents` (see its memory_streamed),
    each document credited with this run's wall seconds per added document."""
    info = memory.info()
    ingested = [
        {
            "doc_index": index,
            "doc_id": document["id"],
            "seconds": round(seconds_per_document, 3),
            "tokens": memory.documents[document["id"]].tokens,
            "adapter_bytes": info.adapter_bytes,
        }
        for index, document in enumerate(documents)
    ]
    progress = folder.parent / f"{folder.name}.progress.json"
    progress.write_text(json.dumps({"ingested": ingested, "curve": []}))


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SQUAD)
    # Not --n: torchrun would take it for an abbreviation of one of its own options.
    parser.add_argument("--passages", type=int, default=16, help="quality.py's --n")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="base model (default: the config's)")
    parser.add_argument("--device", help="torch device (default: the config's)")
    parser.add_argument("--config", default="{}", help="MemoryConfig as JSON, or a JSON file")
    parser.add_argument("--memory", type=Path, required=True, help="a new memory folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON results (rank 0)")
    parser.add_argument("--verbose", action="store_true", help="log each transformation")
    args = parser.parse_args()
    args.memory_config = parse_memory_config(parser, args.config, args.model, args.device)
    if os.environ.get("WORLD_SIZE") is None:
        parser.error("run it with torchrun (--nproc-per-node 1 for one GPU)")
    return args


if __name__ == "__main__":
    main()
