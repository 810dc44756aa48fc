"""The client of a distributed run: plan the blocks, send them to Dask, assemble, finish.

1. The inputs are checked and the processing grid resolved exactly as in one process
   (:func:`model_core.inference.engine.prepared`); a folder of tiles becomes a VRT in the work
   folder, where the workers can read it.
2. The global context is read once, here, and sent with every block.
3. The blocks (:mod:`.blocks`) run on the workers (:mod:`.worker`); Dask reruns a block whose
   worker died. Blocks already in the work folder of the same run are reused (``resume``).
4. The blocks are copied into one temporary GeoTIFF, which the single-process code finishes
   (:func:`model_core.inference.engine.finish`: sieving, polygons in strips, the input grid,
   overviews) and moves into place.

A failed or cancelled run removes its work folder, unless ``resume`` asked to keep the finished
blocks; a finished run removes it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ..inference.engine import class_histogram, finish, monotonic_progress, prepared
from ..inference.mosaic import mosaic_input
from ..inference.options import Cancelled, CancelFn, ProgressFn, SegmentOptions, SegmentResult
from ..inference.patches import PatchSource
from ..inference.plan import make_plan
from ..inference.writers import ClassRasterWriter, remove_quietly
from .blocks import check_resume, plan_blocks, run_key, work_folder, write_manifest
from .worker import run_block

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 120
_ENGINE = __package__.rsplit(".", 1)[0]   # "model_core", or the plugin's "fctl_qgis.model_core"


def parse_scheduler(value: str) -> tuple[str, int]:
    """("local", workers) or (address, 0) from ``local``, ``local:N`` or ``tcp://host:port``."""
    v = value.strip()
    if v == "local":
        return "local", max(1, min(os.cpu_count() or 1, 4))
    if v.startswith("local:"):
        try:
            n = int(v.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--dask {value}: give the number of worker processes, e.g. local:2")
        return "local", n
    if "://" in v:
        return v, 0
    raise ValueError(f"--dask {value!r} is not a scheduler: give local, local:N or the "
                     "scheduler's address (tcp://host:8786)")


@contextmanager
def dask_client(scheduler: str) -> Iterator[tuple[object, int]]:
    """A Dask client on ``scheduler`` (a LocalCluster started and closed here for ``local``),
    and the torch threads each block should use (0 = the worker's share of its cores)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise RuntimeError("Dask runs need the dask and distributed packages: pip install "
                           "'dask[distributed]' (see requirements.txt), or run without "
                           "--dask") from exc
    address, n = parse_scheduler(scheduler)
    if address == "local":
        _python_for_workers()
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR)
        client = Client(cluster)
        try:
            yield client, max(1, (os.cpu_count() or 1) // n)
        finally:
            client.close()
            cluster.close()
        return
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"cannot reach the Dask scheduler at {address} ({exc}): start it "
                         "(dask scheduler) and its workers (dask worker ADDRESS), or check the "
                         "address and the firewall") from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except (OSError, TimeoutError):
            raise ValueError(f"the Dask scheduler at {address} has no workers after "
                             f"{WORKERS_TIMEOUT_S} s: start some (dask worker {address})"
                             ) from None
        yield client, 0
    finally:
        client.close()


def _python_for_workers() -> None:
    """Local worker processes are started with ``sys.executable``, which inside QGIS is the QGIS
    program: point multiprocessing at a Python interpreter instead."""
    import multiprocessing
    import sys

    if os.path.basename(sys.executable).lower().startswith("python"):
        return
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (getattr(sys, "_base_executable", ""), shutil.which(ver),
                      shutil.which("python3")):
        if candidate and os.path.basename(candidate).lower().startswith("python"):
            multiprocessing.set_executable(candidate)
            return
    raise RuntimeError(f"no Python interpreter ({ver}) found to start local Dask workers: "
                       "install it, or give the address of a running scheduler")


def segment_distributed(options: SegmentOptions, *, progress: ProgressFn | None = None,
                        is_cancelled: CancelFn | None = None) -> SegmentResult:
    """:func:`model_core.inference.segment` over the Dask scheduler ``options.dask``; the
    same outputs as in one process."""
    t0 = time.perf_counter()
    report = monotonic_progress(progress)
    cancelled = is_cancelled or (lambda: False)
    parse_scheduler(options.dask)   # a bad address fails before anything is read or written
    options = _absolute(options)
    work = work_folder(options.output)
    if work.exists() and not options.resume:
        shutil.rmtree(work)
    work.mkdir(exist_ok=True)
    finished = False
    try:
        with mosaic_input(options, folder=str(work)) as opts:
            with prepared(opts, folder=str(work)) as s, \
                    dask_client(options.dask) as (client, threads):
                result = _run(options, s, client, threads, work, report, cancelled, t0)
        finished = True
        return result
    finally:
        if finished or not options.resume:
            _remove_folder(work)
        else:
            for part in work.glob("*.part"):
                remove_quietly(part)


def _run(original: SegmentOptions, s, client, threads: int, work: Path, report: ProgressFn,
         cancelled: CancelFn, t0: float) -> SegmentResult:
    cfg = s.model.config
    p, k = int(cfg.patch_size), int(cfg.num_classes)
    size = (s.reader.width, s.reader.height)
    blocks = plan_blocks(size, s.window, p, s.options.min_overlap, s.options.block_size)
    key = run_key(original, blocks)
    done = set(check_resume(work, key)) if original.resume else set()
    write_manifest(work, key)
    streams = {name: cfg.context_spec(name) for name in s.model.context_streams}
    source = PatchSource(s.reader, s.bands, s.scaling.scale, p, streams)
    report(0.0, "reading the global context")
    globals_ = {name: source.global_image() for name in source.global_streams}
    todo = [b for b in blocks if b.name not in done]
    log.info("%d blocks of up to %d px (%d finished before, %d to run) on %s", len(blocks),
             s.options.block_size, len(done), len(todo), s.options.dask)
    end = 0.85 if s.options.vector else 0.98
    options = dataclasses.asdict(s.options)
    if todo:
        _compute(client, threads, todo, options, globals_, work, report, cancelled, end,
                 len(blocks) - len(todo), len(blocks))
    report(end, "assembling the blocks")
    wx, wy, ww, wh = s.window
    writer = ClassRasterWriter(s.options.output, ww, wh, s.window_gt, s.reader.crs_wkt,
                               s.card.classes)
    try:
        from osgeo import gdal

        for b in blocks:
            ds = gdal.Open(str(work / b.name))
            if ds is None or (ds.RasterXSize, ds.RasterYSize) != tuple(b.window[2:]):
                raise RuntimeError(f"block {b.name} in {work} is missing or damaged: run again "
                                   "without --resume")
            writer.write(b.window[0] - wx, b.window[1] - wy, ds.GetRasterBand(1).ReadAsArray())
            ds = None
            if cancelled():
                raise Cancelled("segmentation cancelled")
        writer.close()
    except BaseException:
        writer.abort()
        raise
    log.info("%d blocks assembled, %.1f s since the start", len(blocks), time.perf_counter() - t0)
    plan = make_plan(size, p, s.window, k, s.options.memory_mb, s.options.min_overlap)
    return finish(s, writer, class_histogram(writer.tmp, k), plan.grid, len(plan.patches),
                  report, cancelled, t0, end)


def _compute(client, threads: int, todo, options: dict, globals_: dict[str, np.ndarray],
             work: Path, report: ProgressFn, cancelled: CancelFn, end: float, done: int,
             total: int) -> None:
    from distributed import wait

    link = getattr(client, "dashboard_link", None)
    if link:
        log.info("Dask dashboard: %s", link)
    report(end * done / total, f"{total - done} blocks on {options['dask']}")
    [shared] = client.scatter([globals_], broadcast=True)
    futures = [client.submit(run_block, {"options": options,
                                   "window": b.window, "globals": shared,
                                   "path": str(work / b.name), "index": b.index,
                                   "threads": options["threads"] or threads},
                             key=f"fctl-block-{b.name}-{os.getpid()}-{time.time_ns()}")
               for b in todo]
    pending = set(futures)
    try:
        while pending:
            if cancelled():
                raise Cancelled("segmentation cancelled")
            try:
                finished, pending = wait(pending, timeout=0.5,
                                         return_when="FIRST_COMPLETED")
            except TimeoutError:
                continue
            for f in finished:
                try:
                    info = f.result()   # a block's error ends the run with that error
                except ModuleNotFoundError as exc:
                    raise RuntimeError(f"a Dask worker cannot import the FCtL engine ({exc}): "
                                       f"put the folder that holds {_ENGINE.split('.')[0]} on "
                                       "the workers' PYTHONPATH and install requirements.txt "
                                       "there") from None
                done += 1
                report(end * done / total, f"block {done}/{total} "
                       f"({info['seconds']:.1f} s, worker pid {info['pid']})")
    except BaseException:
        client.cancel(futures)
        raise


def _remove_folder(folder: Path) -> None:
    """Remove the work folder; again after a moment if a block still running on an external
    cluster wrote into it meanwhile (it stops once the folder is gone)."""
    for _ in range(5):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(1.0)
    log.warning("could not remove the work folder %s: remove it by hand", folder)


def _absolute(options: SegmentOptions) -> SegmentOptions:
    """Paths the workers open, made absolute (they may run in another folder)."""
    fields = {}
    for f in ("input", "output", "vector", "model", "mask"):
        v = getattr(options, f)
        if v and not str(v).startswith("/vsi") and "://" not in str(v):
            fields[f] = os.path.abspath(v)
    return dataclasses.replace(options, **fields)
