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

from ..ground import format_area
from .option_table import NUMBER_LISTS, SCALARS, cli_options, parse_numbers, segment_options
from .options import Cancelled, SegmentOptions

log = logging.getLogger(__name__)

GDAL_CACHE_MB = 64    # GDAL block cache of the command line (unless GDAL_CACHEMAX is set)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per command line option of the run-option table, and the former flags."""
    for opt in cli_options():
        kw: dict = {"help": opt.help.replace("%", "%%")}   # argparse formats help with %
        if opt.kind == "bool":
            # a bool the user turns on; True defaults are shown negated (--no-prefetch)
            kw.update(action="store_true")
        elif opt.kind in NUMBER_LISTS:
            kw.update(nargs="+", metavar=opt.metavar)
        elif opt.kind in ("int", "float"):
            kw.update(type=opt.cli_type or SCALARS[opt.kind], default=opt.default)
            if opt.metavar:
                kw["metavar"] = opt.metavar
        elif opt.kind == "choice":
            kw.update(choices=opt.choices, default=opt.default)
        elif opt.default is not None:
            kw["default"] = opt.default
        if opt.metavar and not opt.positional:
            kw.setdefault("metavar", opt.metavar)
        if opt.positional:
            parser.add_argument(opt.cli, **kw)
        else:
            parser.add_argument(opt.cli, dest=opt.name, **kw)
        for old in opt.old_cli:   # deprecated spellings: accepted, ignored with a warning
            parser.add_argument(old, dest=_old_dest(old), action="store_true",
                                help=argparse.SUPPRESS)


def _old_dest(flag: str) -> str:
    return "deprecated_" + flag.lstrip("-").replace("-", "_")


def options_from_args(args: argparse.Namespace) -> SegmentOptions:
    values = {}
    for opt in cli_options():
        value = getattr(args, opt.name)
        if opt.kind in NUMBER_LISTS and value is not None:
            number, count = NUMBER_LISTS[opt.kind]
            value = parse_numbers(value, number, count, opt.cli)
        values[opt.name] = value
        for old in opt.old_cli:
            if getattr(args, _old_dest(old), False):
                log.warning("%s is deprecated and ignored: what it turned on is the default "
                            "now (see %s)", old, opt.cli)
    return segment_options(values)


def _run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from . import segment

    if args.threads:
        torch.set_num_threads(args.threads)
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
    print(f"processing: {result.processing}")
    total = sum(result.class_pixels.values()) or 1
    for cid, n in result.class_pixels.items():
        area = result.class_areas.get(cid, 0.0)
        where = format_area(area) if result.area_unit == "m2" else f"{area:,.0f} px"
        print(f"  {cid:3d} {result.class_names.get(cid, ''):<20} {100 * n / total:6.2f}%  "
              f"{where}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("segment", help="segment a raster into a classified GeoTIFF (+ polygons)",
                       description="Segment any GDAL raster with an FCtL model: classified "
                       "GeoTIFF (uint8 class ids, 255 = nodata) and optional GeoPackage polygons.")
    add_option_arguments(p)
    p.set_defaults(func=_run)
