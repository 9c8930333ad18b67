"""Shard files written, and committed, on a worker thread while the GPU consolidates the next
group of documents. Writing a group (gigabytes for 128 fresh default-model shards) takes far
less than consolidating it, but done inline it adds up over a long ingest, and the GPU waits
through all of it. One job runs at a time, and `submit` first waits for the one
before: a failure surfaces at the next group (or at the end), and the host holds the
weights of two groups at most (the one being written, the next one copied off the GPU)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType

logger = logging.getLogger(__name__)


class BackgroundWrites:
    """`with BackgroundWrites() as writes: writes.submit(job)`; leaving the block waits for
    the last job. Leaving it on an error waits too (so no file is half written when the
    caller cleans up) and keeps that error, logging the job's own failure, if any."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writes")
        self._running: Future[None] | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Wait for the previous job (raising its error), then start `job`."""
        self.wait()
        self._running = self._pool.submit(job)

    def wait(self) -> None:
        """Wait for the running job, if any; raise its error."""
        running, self._running = self._running, None
        if running is not None:
            running.result()

    def __enter__(self) -> BackgroundWrites:
        return self

    def __exit__(
        self,
        error_type: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if error is None:
                self.wait()
            else:
                self._wait_quietly()
        finally:
            self._pool.shutdown(wait=True)

    def _wait_quietly(self) -> None:
        try:
            self.wait()
        except Exception:
            logger.exception("a background shard write failed as well")
