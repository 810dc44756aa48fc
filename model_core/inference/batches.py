"""The batch loop of a run: batches of patches read ahead in reading threads, run through the
network in run order, and their logits handed to the streaming merge.

Reading threads each use their own handle on the raster (:meth:`WindowReader.reopen`): batches
are prepared (shared tiles planned) in run order by the loop, read in parallel, and consumed in
run order, so the network sees the inputs a single thread gives.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from .merge import StreamingMerger
from .options import Cancelled, CancelFn, ProgressFn, SegmentOptions
from .patches import PatchSource
from .predict import Predictor

log = logging.getLogger(__name__)


def resolve_batch_size(batch_size: int, device: torch.device, contexts: bool = False,
                       call_chunk: int = 1) -> int:
    """``batch_size`` <= 0 means auto: 8 on CUDA. On CPU the encoder and decoder run
    ``call_chunk`` images per call whatever the batch (:meth:`FCtL.cpu_call_chunk`), and the
    stride-32 context fusion's small matrix products run about twice as fast 4 at a time: 4 for
    models with contexts or a chunk of several images (a 5000 px raster: 12-25 % less CPU time,
    60-170 MB more RSS), else 1 (image by image anyway, so the smaller footprint)."""
    if batch_size > 0:
        return int(batch_size)
    if device.type == "cuda":
        return 8
    return 4 if contexts or call_chunk > 1 else 1


def resolve_read_workers(read_workers: int, device: torch.device) -> int:
    """``read_workers`` <= 0 means auto: 1 on CPU (the reads share the cores with the network:
    a second thread only adds contention), on CUDA up to 4, one core left to the main thread."""
    if read_workers > 0:
        return int(read_workers)
    if device.type != "cuda":
        return 1
    return max(1, min(4, (os.cpu_count() or 2) - 1))


@contextmanager
def reading_threads(source: PatchSource, workers: int
                    ) -> Iterator[tuple[ThreadPoolExecutor, int]]:
    """A pool of up to ``workers`` threads reading ``source``, each through its own handle on
    the raster (the source's reader, then :meth:`WindowReader.reopen` ones, closed at the end);
    one thread when the reader cannot be opened twice. Yields the pool and its thread count;
    submit :meth:`PatchSource.fetch` calls of batches prepared in run order."""
    handles = [source.reader]
    for _ in range(workers - 1):
        other = source.reader.reopen()
        if other is None:
            log.info("this source cannot be opened twice: reading in one thread")
            break
        handles.append(other)
    free = list(handles)
    pool = ThreadPoolExecutor(len(handles), thread_name_prefix="fctl-read",
                              initializer=lambda: source.use_reader(free.pop()))
    try:
        yield pool, len(handles)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for other in handles[1:]:
            other.close()


def run_patches(plan, source: PatchSource, predictor: Predictor, merger: StreamingMerger,
                 options: SegmentOptions, report: ProgressFn, cancelled: CancelFn,
                 end: float) -> None:
    """Batches in plan order; the next ones are read while the current one runs.

    Reading threads each use their own handle on the raster; batches are prepared (shared
    tiles planned) in run order here and read in parallel, and consumed in run order.
    """
    model = predictor.model
    bs = resolve_batch_size(options.batch_size, predictor.device,
                            bool(getattr(model, "context_streams", ())),
                            getattr(model, "call_chunk", 1))
    batches = [plan.patches[i:i + bs] for i in range(0, len(plan.patches), bs)]
    total = len(plan.patches)
    workers = min(resolve_read_workers(options.read_workers, predictor.device), len(batches))
    threads = reading_threads(source, workers) if options.prefetch else nullcontext((None, 0))
    with threads as (pool, ahead_max):
        ahead: deque[Future] = deque()
        queued = 0

        def queue_next() -> None:
            nonlocal queued
            ahead.append(pool.submit(source.fetch, source.prepare(batches[queued])))
            queued += 1

        if pool is not None:
            while queued < min(ahead_max, len(batches)):
                queue_next()
        done = 0
        skipped = deque(plan.skipped)   # not run (masked out), counted in plan order
        for patches in batches:
            if cancelled():
                raise Cancelled("segmentation cancelled")
            batch = ahead.popleft().result() if pool is not None else source.load(patches)
            if pool is not None and queued < len(batches):
                queue_next()
            logits = predictor(batch)
            for j, patch in enumerate(batch.patches):
                while skipped and _order(skipped[0]) < _order(patch):
                    merger.skip(skipped.popleft())
                merger.add(patch, logits[j], batch.valid[j])
            done += len(patches)
            report(end * done / total, f"patch {done}/{total}")
        while skipped:
            merger.skip(skipped.popleft())


def _order(patch) -> tuple[int, int, int]:
    """A patch's place in the plan's order (column group, row, column)."""
    return patch.group, patch.row, patch.col
