"""``python -m model_core segment INPUT OUTPUT.tif [--vector OUT.gpkg] ...``.

A tqdm bar shows progress; the first Ctrl-C cancels cleanly at the next batch (nothing is left
behind), a second one interrupts at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Sequence

from .options import Cancelled, SegmentOptions

log = logging.getLogger(__name__)

GDAL_CACHE_MB = 64    # GDAL block cache of the command line (unless GDAL_CACHEMAX is set)


def _numbers(values: Sequence[str], kind: type, count: int | None, what: str) -> list:
    """Numbers given as separate arguments and/or comma-separated."""
    parts = [v for s in values for v in s.replace(",", " ").split()]
    try:
        out = [kind(v) for v in parts]
    except ValueError:
        raise ValueError(f"{what} takes numbers, got {' '.join(values)!r}") from None
    if count is not None and len(out) != count:
        raise ValueError(f"{what} takes {count} numbers, got {len(out)}")
    return out


def options_from_args(args: argparse.Namespace) -> SegmentOptions:
    return SegmentOptions(
        input=args.input, output=args.output, vector=args.vector, model=args.model,
        device=args.device, batch_size=args.batch_size, tta=args.tta,
        extent=tuple(_numbers(args.extent, float, 4, "--extent")) if args.extent else None,
        window=tuple(_numbers(args.window, int, 4, "--window")) if args.window else None,
        bands=_numbers(args.bands, int, None, "--bands") if args.bands else None,
        scale=tuple(_numbers(args.scale, float, 2, "--scale")) if args.scale else None,
        min_area=args.min_area, min_area_unit=args.min_area_unit,
        sieve_raster=args.sieve_raster, min_overlap=args.min_overlap,
        layer_name=args.layer, memory_mb=args.memory_mb, prefetch=not args.no_prefetch,
        read_workers=args.read_workers, compile=args.compile, shared_context=args.shared_context)


def _keep_freed_memory() -> None:
    """Have glibc keep freed blocks up to 1 GiB for reuse instead of unmapping them.

    Each forward pass allocates and frees activations of tens of MB; by default glibc maps and
    unmaps them every time and the kernel zeroes the pages again: on CPU that system time was
    as large as the compute (EfficientNet-Lite0, 508 px, batch 4: 1.7 -> 1.3 s per patch). Done
    only in this command's own process, never in a host application such as QGIS.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):   # not glibc: nothing to tune
        log.debug("mallopt unavailable; allocator left as is")


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from . import segment

    if args.threads:
        torch.set_num_threads(args.threads)
    _keep_freed_memory()
    if not os.environ.get("GDAL_CACHEMAX"):
        # GDAL's default block cache is 5% of RAM; a patch row's windows need far less, and a
        # fixed cache keeps the process's memory independent of the raster's size.
        from osgeo import gdal

        gdal.SetCacheMax(GDAL_CACHE_MB * 2 ** 20)
    options = options_from_args(args)
    stop = threading.Event()

    def on_sigint(signum, frame):   # first Ctrl-C: cancel at the next batch; second: now
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        tqdm.write("cancelling after the current batch (Ctrl-C again to interrupt now)",
                   file=sys.stderr)

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    bar = tqdm(total=1000, unit="‰", desc="segment", file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")

    def progress(fraction: float, message: str) -> None:
        bar.update(max(0, int(round(1000 * fraction)) - bar.n))
        if message:
            bar.set_postfix_str(message, refresh=False)

    try:
        result = segment(options, progress=progress, is_cancelled=stop.is_set)
    except Cancelled:
        bar.close()
        print("cancelled: no output was written", file=sys.stderr)
        return 130
    finally:
        bar.close()
        if in_main:
            signal.signal(signal.SIGINT, previous)
    mpx = result.width * result.height / 1e6
    print(f"{result.output}: {result.width} x {result.height} px, {result.grid[0]} x "
          f"{result.grid[1]} patches ({result.patches} run) on {result.device} in "
          f"{result.seconds:.1f} s ({result.seconds / max(mpx, 1e-9):.2f} s/Mpx)")
    if result.vector:
        print(f"polygons: {result.vector}")
    total = sum(result.class_pixels.values()) or 1
    for cid, n in result.class_pixels.items():
        print(f"  {cid:3d} {result.class_names.get(cid, ''):<20} {100 * n / total:6.2f}%  "
              f"{result.class_areas.get(cid, 0.0):.6g}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment a raster into a classified GeoTIFF (+ polygons)",
                       description="Segment any GDAL raster with an FCtL model: classified "
                       "GeoTIFF (uint8 class ids, 255 = nodata) and optional GeoPackage polygons.")
    p.add_argument("input", help="input raster (GeoTIFF, COG, JPEG, PNG, VRT, ...)")
    p.add_argument("output", help="output classified GeoTIFF")
    p.add_argument("--vector", help="also write class polygons to this GeoPackage (.gpkg)")
    p.add_argument("--model", help="FCtL checkpoint (.safetensors); default: the bundled model")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=0,
                   help="patches per forward pass (default 0 = auto: 8 on CUDA; on CPU 4 for "
                        "FCtL, 1 for a model without contexts)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: flips x 90-degree rotations (8 passes)")
    p.add_argument("--extent", nargs="+", metavar="XMIN YMIN XMAX YMAX",
                   help="process only this area (map coordinates of the raster's CRS)")
    p.add_argument("--window", nargs="+", metavar="XOFF YOFF XSIZE YSIZE",
                   help="process only this pixel window")
    p.add_argument("--bands", nargs="+", metavar="B", help="1-based input bands, e.g. 3 2 1")
    p.add_argument("--scale", nargs="+", metavar="LO HI",
                   help="raw value range mapped to [0, 1] (default: the model's)")
    p.add_argument("--min-area", type=float, default=0.0,
                   help="sieve regions smaller than this before polygonising")
    p.add_argument("--min-area-unit", choices=("pixels", "map"), default="pixels",
                   help="unit of --min-area: pixels or square map units")
    p.add_argument("--sieve-raster", action="store_true",
                   help="apply the --min-area sieve to the output raster too")
    p.add_argument("--min-overlap", type=int, default=50,
                   help="minimum overlap of neighbouring patches in pixels")
    p.add_argument("--layer", default="classes", help="polygon layer name")
    p.add_argument("--memory-mb", type=float, default=1024.0,
                   help="memory budget of the logit merge in MiB (never changes the labels)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="do not read the next batch in a background thread")
    p.add_argument("--read-workers", type=int, default=0, metavar="N",
                   help="threads reading batches ahead, each with its own handle on the raster "
                        "(default: 1 on CPU, up to 4 on CUDA)")
    p.add_argument("--compile", action="store_true",
                   help="compile the network with torch.compile (CUDA, large rasters)")
    p.add_argument("--shared-context", action="store_true",
                   help="encode the medium context once per raster area instead of once per "
                   "patch: about 1.2-1.5x faster on CPU, labels differ slightly (see the README)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=_run)
