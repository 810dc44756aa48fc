"""Bench rows for Dask runs: one raster in process and on ``local:N``, and a projection.

``python -m model_core bench --dask 20000 --dask-workers 2``: a synthetic RGB raster of each
size (:func:`.rasters._synthetic_raster`) segmented by the bundled default model, first in this
process, then block by block on a LocalCluster of N worker processes. Per size: both wall
times, the blocks, the summed block compute time, the start-up (cluster, model, global
context), the client's serial part after it (assembly, overviews: what N machines do not
divide; it grows with the pixels), the overhead per block, the share of
pixels whose labels agree (1.0 when the thread counts match), and from those the projected wall
time of a 200,000 x 200,000 px mosaic on 1 to 64 machines like this one.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

PROJECTED_SIDE = 200_000
PROJECTED_MACHINES = (1, 4, 16, 64)


def bench_dask(sizes: Sequence[int], tmp: Path, workers: int = 2,
               block_size: int = 4096) -> dict[str, Any]:
    """One row per raster size (see the module docstring)."""
    import numpy as np
    import torch
    from osgeo import gdal

    from ..inference import SegmentOptions, segment
    from .rasters import _synthetic_raster

    rows: dict[str, Any] = {}
    for size in sizes:
        raster = tmp / f"dask_{size}.tif"
        _synthetic_raster(raster, size)
        t = time.perf_counter()
        one = segment(SegmentOptions(str(raster), str(tmp / f"one_{size}.tif"), device="cpu"))
        t_one = time.perf_counter() - t
        blocks: list[float] = []
        started: list[float] = []

        def progress(fraction: float, message: str) -> None:
            if " blocks on " in message and not started:
                started.append(time.perf_counter())
            m = re.match(r"block \d+/\d+ \(([\d.]+) s", message)
            if m:
                blocks.append(float(m.group(1)))

        t = time.perf_counter()
        dk = segment(SegmentOptions(str(raster), str(tmp / f"dask_{size}_out.tif"),
                                    device="cpu", dask=f"local:{workers}",
                                    block_size=block_size), progress=progress)
        t_dask = time.perf_counter() - t
        a = gdal.Open(one.output)
        b = gdal.Open(dk.output)
        agree = float(np.mean(a.ReadAsArray() == b.ReadAsArray()))
        a = b = None
        compute = sum(blocks)
        startup = started[0] - t if started else 0.0   # cluster start, model, global context
        serial = max(0.0, t_dask - startup - compute / workers)
        mpx = size * size / 1e6
        scale = PROJECTED_SIDE ** 2 / 1e6 / mpx
        rows[str(size)] = {
            "in_process_s": round(t_one, 1), "in_process_threads": torch.get_num_threads(),
            f"local_{workers}_s": round(t_dask, 1), "workers": workers,
            "threads_per_worker": max(1, (os.cpu_count() or 1) // workers),   # as the client
            "blocks": len(blocks), "block_compute_s": round(compute, 1),
            "startup_s": round(startup, 1), "client_serial_s": round(serial, 1),
            "overhead_per_block_s": round((t_dask - t_one) / max(1, len(blocks)), 2),
            "labels_agree": round(agree, 6),
            "projected_200k_hours": {
                str(n): round((startup + serial * scale + compute * scale / (workers * n))
                              / 3600, 1) for n in PROJECTED_MACHINES},
        }
        log.info("dask bench %d px: %s", size, rows[str(size)])
    return rows


def to_markdown(rows: dict[str, Any]) -> str:
    lines = ["", "## Dask runs (bundled default model)", "",
             "| raster | in process | local:N | blocks | block compute | start-up | client serial "
             "| overhead per block | labels agree | 200k x 200k on 1 / 4 / 16 / 64 machines |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for size, r in rows.items():
        n = r["workers"]
        proj = " / ".join(f"{h} h" for h in r["projected_200k_hours"].values())
        lines.append(f"| {size} px | {r['in_process_s']} s | {r[f'local_{n}_s']} s (N={n}) | "
                     f"{r['blocks']} | {r['block_compute_s']} s | {r['startup_s']} s | "
                     f"{r['client_serial_s']} s | "
                     f"{r['overhead_per_block_s']} s | {100 * r['labels_agree']:.4f} % | "
                     f"{proj} |")
    return "\n".join(lines) + "\n"
