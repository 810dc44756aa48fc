"""``python -m model_core bench``: FCtL against its FCN-8s baseline, same backbone, decoder, grid.

Writes ``bench.json`` and ``bench.md`` with per-patch latency and throughput, a per-module
profile, whole-raster wall time and peak RSS (each raster run in its own process through the
``segment`` command, exactly as users run it), the FCtL/baseline ratios and the multiply-add
floor of each ratio; for the paper's 508 px setting (``--backbone`` etc.) and for the bundled
default model's own configuration (``default_model``, its raster runs with the model file).
``ratios.raster_N`` is the ratio of the default mode (shared context), ``raster_N_exact`` the
per-patch contexts'. The per-patch part needs no GDAL, so it also runs on GPU machines without it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .polygons import parse_sizes


def _run(args: argparse.Namespace) -> int:
    from .run import run_bench   # torch: imported when the bench runs, not for the parser
    from .report import to_markdown

    report = run_bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    md = "" if args.dask_only else to_markdown(report)
    if report.get("polygons"):
        from .polygons import to_markdown as polygons_markdown
        md += polygons_markdown(report["polygons"])
    if report.get("dask"):
        from .dask_runs import to_markdown as dask_markdown
        md += dask_markdown(report["dask"])
    (out / "bench.md").write_text(md)
    print(md)
    print(f"written {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark FCtL against the FCN-8s baseline")
    p.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--patch-size", type=int, default=508)
    p.add_argument("--medium-context", default="x3")
    p.add_argument("--large-context", default="global")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--raster-batch-size", type=int, default=0,
                   help="batch size of the whole-raster runs (0 = the CLI's auto)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raster-repeats", type=int, default=1,
                   help="segment each raster this many times and keep the fastest run")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rasters", type=lambda s: [int(v) for v in s.split(",") if v],
                   default=[2448, 5000], help="raster sides to segment, e.g. 2448,5000 ('' = none)")
    p.add_argument("--no-default-model", dest="default_model", action="store_false",
                   help="skip the section of the bundled default model's own configuration")
    p.add_argument("--polygons", type=parse_sizes, default=[],
                   help="also time the polygon step alone on synthetic classes of these sizes, "
                        "e.g. 5000,20000,100000x10000 (default: none)")
    p.add_argument("--polygons-one-pass", action="store_true",
                   help="with --polygons: also the former whole-band GDAL polygon step")
    p.add_argument("--dask", type=lambda s: [int(v) for v in s.split(",") if v], default=[],
                   help="also segment synthetic rasters of these sides in process and on a "
                        "Dask LocalCluster, e.g. 20000 (default: none)")
    p.add_argument("--dask-workers", type=int, default=2, help="worker processes of --dask")
    p.add_argument("--block-size", type=int, default=4096, help="block size of --dask runs")
    p.add_argument("--dask-only", action="store_true",
                   help="run only the --dask rows (no per-patch or raster rows)")
    p.set_defaults(func=_run)
