"""The checks a run makes before it writes anything: bands, output paths, the minimum area.

Each failure names the problem and the remedy; nothing is created before they all pass.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..ground import ground_of
from .options import SegmentOptions
from .polygons import pixel_area
from .reader import WindowReader

log = logging.getLogger(__name__)


def resolve_bands(requested: list[int] | None, card_bands: list[int], band_count: int,
                  in_chans: int, colors: Sequence[str] | None = None) -> list[int]:
    """1-based raster bands fed to the network: ``requested`` (--bands) or the model's; a
    single-band raster is replicated to the model's channels (grey -> RGB).

    ``colors``: the raster's colour interpretation of each band (GDAL's names, any case). A
    model reading bands 1, 2, 3 reads red, green, blue; a raster whose bands say red, green and
    blue are elsewhere (a blue, green, red, near-infrared satellite product) is read by those
    names instead."""
    if requested:
        bands = [int(b) for b in requested]
        bad = [b for b in bands if not 1 <= b <= band_count]
        if bad:
            raise ValueError(f"band(s) {bad} do not exist: the raster has {band_count} band(s)")
        if len(bands) == 1 and in_chans > 1:
            log.info("band %d replicated to the model's %d input channels", bands[0], in_chans)
            return bands * in_chans
        if len(bands) != in_chans:
            raise ValueError(f"{len(bands)} band(s) {bands} given but the model takes "
                             f"{in_chans} channels: give {in_chans} bands (or one to replicate)")
        return bands
    bands = [int(b) for b in card_bands]
    colors = list(colors or [])
    named = rgb_by_colour(colors)
    if bands == [1, 2, 3] and named is not None and named != bands:
        log.info("the raster's bands %d, %d, %d are red, green and blue (its colour "
                 "interpretation): those are fed to the model, which reads red, green, blue "
                 "(give --bands to choose others)", *named)
        return named
    if all(1 <= b <= band_count for b in bands):
        return bands
    # an alpha band is the data's mask (the reader applies it), not a channel: grey + alpha
    # (a scan warped with transparency) is a single-band raster
    data = [b for b in range(1, band_count + 1)
            if b > len(colors) or colors[b - 1].lower() != "alpha"]
    if len(data) == 1:
        log.info("single-band raster%s: band %d replicated to the model's %d channels",
                 " (and an alpha band, its mask)" if band_count > 1 else "", data[0], in_chans)
        return data * in_chans
    if band_count < in_chans:
        raise ValueError(f"the raster has {band_count} band(s) but the model reads {in_chans} "
                         f"channels (bands {bands}): give --bands with one band to replicate "
                         f"(e.g. --bands 1), or use a model trained on {band_count} band(s)")
    raise ValueError(f"the raster has {band_count} band(s) but the model reads bands {bands}: "
                     f"choose {in_chans} of its bands with --bands (e.g. --bands "
                     f"{' '.join(str(i) for i in range(1, in_chans + 1))})")


def rgb_by_colour(colors: Sequence[str]) -> list[int] | None:
    """1-based (red, green, blue) bands when each colour names exactly one band, else None."""
    names = [c.lower() for c in colors]
    found = []
    for want in ("red", "green", "blue"):
        hits = [i + 1 for i, c in enumerate(names) if c == want]
        if len(hits) != 1:
            return None
        found.append(hits[0])
    return found


def check_outputs(options: SegmentOptions, reader: WindowReader) -> None:
    inputs = {os.path.realpath(p) for p in (options.input, getattr(reader, "path", None))
              if p and os.path.exists(p)}
    out = os.path.realpath(options.output)
    if out in inputs:
        raise ValueError(f"the output {options.output} is the input raster: choose another "
                         "output path (the input is never modified)")
    if Path(options.output).suffix.lower() not in (".tif", ".tiff"):
        # GDAL would sniff a GeoTIFF named .png, but other software goes by the name
        raise ValueError(f"the class raster is written as a GeoTIFF: give a .tif path, not "
                         f"{options.output}")
    check_folder(options.output, "output")
    if options.vector:
        vec = os.path.realpath(options.vector)
        if vec in inputs or vec == out:
            raise ValueError(f"the polygon output {options.vector} is the input or the raster "
                             "output: choose another path")
        if Path(options.vector).suffix.lower() != ".gpkg":
            raise ValueError(f"polygons are written as a GeoPackage: give a .gpkg path, not "
                             f"{options.vector}")
        check_folder(options.vector, "polygon output")
    if options.min_area_unit not in ("m2", "pixels", "map"):
        raise ValueError(f"min_area_unit must be 'm2', 'pixels' or 'map', got "
                         f"{options.min_area_unit!r}")
    if options.min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {options.min_area}")


def check_folder(path: str, what: str) -> None:
    if Path(path).is_dir():
        raise ValueError(f"the {what} {path} is an existing folder: give the path of a "
                         "file (in that folder, for instance)")
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"the {what} folder {folder} does not exist: create it or "
                                "choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"the {what} folder {folder} is not writable: choose another "
                              "path")


def sieve_pixels(options: SegmentOptions, gt, ground) -> int:
    """The minimum area in pixels of the processing grid."""
    if options.min_area <= 0:
        return 0
    if options.min_area_unit == "m2":   # ground known: checked by check_min_area
        return int(np.ceil(options.min_area / ground.pixel_area_m2))
    if options.min_area_unit == "map":
        return int(np.ceil(options.min_area / pixel_area(gt)))
    return int(np.ceil(options.min_area))


def check_min_area(options: SegmentOptions, reader: WindowReader) -> None:
    """A minimum area in m^2 needs the ground: refused before the run, not after it."""
    if options.min_area <= 0 or options.min_area_unit != "m2":
        return
    gt = reader.geotransform if getattr(reader, "has_geotransform", True) else None
    if not ground_of(gt, reader.crs_wkt, reader.width, reader.height).known:
        raise ValueError(f"a minimum area in square metres needs a georeferenced raster with a "
                         f"CRS, which {options.input} is not: give the minimum area in pixels "
                         "(--min-area-unit pixels)")
