"""Bench rows for the polygon step alone (sieve at 25 px + polygonise to a GeoPackage).

``python -m model_core bench --polygons 5000,20000,100000x10000``: for each size, a synthetic
class raster (:func:`model_core.bench.polygon_runner.make_classes`) is written by one process
and sieved and polygonised by another, which reports its wall time per stage and its peak RSS
(no torch in it: the RSS is the polygon step's, plus Python, numpy and GDAL).
``--polygons-one-pass`` adds the former whole-band GDAL implementation beside it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"5000,100000x10000"`` -> ``[(5000, 5000), (100000, 10000)]`` (width x height)."""
    sizes = []
    for item in (s.strip().lower() for s in text.split(",")):
        if not item:
            continue
        w, _, h = item.partition("x")
        try:
            sizes.append((int(w), int(h or w)))
        except ValueError:
            raise ValueError(f"--polygons takes sizes such as 5000,20000,100000x10000, not "
                             f"{item!r}") from None
    return sizes


def _py(*args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "model_core.bench.polygon_runner", *args],
                          cwd=str(ROOT), env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"polygon bench step {args[0]} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def bench_polygons(sizes: Sequence[tuple[int, int]], tmp: Path, one_pass: bool = False
                   ) -> dict[str, Any]:
    """One row per size (and per implementation with ``one_pass``): seconds, polygons,
    GeoPackage MB, peak RSS MB."""
    rows: dict[str, Any] = {}
    for w, h in sizes:
        raster = tmp / f"classes_{w}x{h}.tif"
        t = time.perf_counter()
        _py("make", str(raster), str(w), str(h))
        log.info("polygon bench: %d x %d classes written in %.0f s", w, h, time.perf_counter() - t)
        for mode in ("strips", "one_pass") if one_pass else ("strips",):
            work = tmp / f"poly_{w}x{h}_{mode}"
            work.mkdir(exist_ok=True)
            out = _py("run", str(raster), str(work), *(["--one-pass"] if mode == "one_pass"
                                                      else []))
            rows[f"{w}x{h}" + ("" if mode == "strips" else " one pass")] = \
                json.loads(out.strip().splitlines()[-1])
            for p in work.iterdir():
                p.unlink()
        raster.unlink()
    return rows


def to_markdown(rows: dict[str, Any] | None) -> str:
    """The polygon step's table ('' without rows)."""
    if not rows:
        return ""
    lines = ["", "### Polygon step (sieve 25 px + polygonise), synthetic classes", "",
             "| raster | sieve s | polygonise s | total s | polygons | GeoPackage MB | "
             "peak RSS MB |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['sieve_s']:.1f} | {r['polygonize_s']:.1f} | "
                     f"{r['total_s']:.1f} | {r['polygons']} | {r['gpkg_mb']:.1f} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"
