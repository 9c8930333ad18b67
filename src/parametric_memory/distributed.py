"""Ingest on several GPUs of one host: the same command, launched by `torchrun`, one process
per GPU::

    torchrun --nproc-per-node 4 -m parametric_memory.cli ingest ./docs --memory ./wiki

Shards are independent (see `sharding.py`), so each process consolidates whole shards on its
own GPU (fresh one-document shards several at a time, as one process would:
`ShardingConfig.shards_in_parallel`), and the memory is the one a single process would
write, up to numerical noise.
torch.distributed (gloo) carries only coordination: which state to start from, each
process's results to rank 0, and the outcome. Rank 0 holds the memory's write lock
throughout and commits every new document at once when all processes have finished, so a
failure anywhere commits nothing. With `documents_per_shard=None` (one adapter) there is one
shard and one process does all the work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import store
from .config import MemoryConfig
from .errors import ParametricMemoryError
from .ingest import Ingest, IngestReport, ShardResult
from .memory import ParametricMemory
from .records import Document
from .sharding import balance_shards

logger = logging.getLogger(__name__)

T = TypeVar("T")


class DistributedIngestError(ParametricMemoryError):
    """A process of a multi-GPU ingest failed; nothing was committed."""


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def add_documents_distributed(
    path: str | Path,
    documents: Sequence[Document],
    *,
    config: MemoryConfig | None = None,
    progress: bool = True,
) -> IngestReport:
    """Run in every process of a `torchrun` job: consolidate `documents` into the memory at
    `path` (created with `config` if it does not exist), shards spread over the processes.
    Every process returns the same report."""
    started_here = not dist.is_initialized()
    if started_here:
        init_process_group()
    try:
        memory = _open_or_create(Path(path), config)
        return _ingest(memory, list(documents), progress)
    finally:
        if started_here:
            dist.destroy_process_group()


def init_process_group() -> None:
    """Join the torchrun job: pick this process's GPU, then join the (gloo) group."""
    _use_local_gpu()
    dist.init_process_group("gloo")


def _use_local_gpu() -> None:
    """Process i uses GPU i (modulo the GPUs there are: several processes may share one,
    which keeps a GPU busy when one process's small steps cannot)."""
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def _open_or_create(root: Path, config: MemoryConfig | None) -> ParametricMemory:
    """Rank 0 opens the memory, creating it if needed; then the others open it."""
    memory: list[ParametricMemory] = []

    def open_on_rank_zero() -> None:
        if (root / store.MANIFEST_FILE).exists():
            memory.append(ParametricMemory.open(root))
        else:
            memory.append(ParametricMemory.create(root, config))

    _on_rank_zero(open_on_rank_zero)
    return memory[0] if memory else ParametricMemory.open(root)


def _ingest(memory: ParametricMemory, documents: list[Document], progress: bool) -> IngestReport:
    rank, world = dist.get_rank(), dist.get_world_size()
    with contextlib.ExitStack() as held_by_rank_zero:

        def lock_and_stage() -> Path:
            held_by_rank_zero.enter_context(store.write_lock(memory.root))
            memory.writer().refresh(writer=True)
            staging = store.staging_folder(memory.root)
            held_by_rank_zero.callback(shutil.rmtree, staging, ignore_errors=True)
            return staging

        staging = _on_rank_zero(lock_and_stage)
        ingest = Ingest(memory.writer(), documents, writer=False)
        report = ingest.report
        mine = balance_shards(ingest.shards, world)[rank]
        logger.info("rank %d of %d consolidates shards %s", rank, world, mine)
        results, failure = _consolidate_shards(ingest, mine, staging, progress and rank == 0)
        gathered: list | None = [None] * world if rank == 0 else None
        dist.gather_object((results, failure), gathered, dst=0)

        def commit() -> IngestReport:
            failures = [f"rank {r}: {f}" for r, (_, f) in enumerate(gathered) if f]
            if failures:
                raise DistributedIngestError(
                    f"{len(failures)} process(es) failed, nothing committed; {failures[0]}"
                )
            every_result = [result for shard_results, _ in gathered for result in shard_results]
            ingest.commit_results(every_result, staging)
            logger.info("committed %d shard(s) from %d process(es)", len(every_result), world)
            for document in ingest.new_documents():
                record = memory.documents[document.id]
                report.added.append(document.id)
                report.chunks += record.chunks
                report.transfer_items += record.transfer_items
            report.list_in_given_order(documents)
            return report

        report = _on_rank_zero(commit)
    if rank != 0:
        memory.writer().refresh(writer=False)  # pick up the commit
    return report


def _consolidate_shards(
    ingest: Ingest, shards: list[int], staging: Path, progress: bool
) -> tuple[list[ShardResult], str | None]:
    """This process's shards, or the error that stopped it (reported, not raised, so every
    process still reaches the gather)."""
    total = sum(len(ingest.shards[shard]) for shard in shards)
    bar = tqdm(total=total, desc="consolidating on rank 0", unit="doc", disable=not progress)
    try:
        with bar:
            return ingest.consolidate_uncommitted(shards, staging, bar), None
    except Exception as error:  # any failure must reach rank 0's decision
        logger.error("consolidation failed:\n%s", traceback.format_exc())
        return [], f"{type(error).__name__}: {error}"


def _on_rank_zero(action: Callable[[], T]) -> T:
    """Run `action` on rank 0 and give every process its result, or raise its error on
    every process (so none waits for a partner that gave up)."""
    outcome: list = [None, None]
    if dist.get_rank() == 0:
        try:
            outcome[0] = action()
        except Exception as error:
            outcome[1] = str(error)
            dist.broadcast_object_list(outcome, src=0)
            raise
    dist.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise DistributedIngestError(f"rank 0: {outcome[1]}")
    return outcome[0]
