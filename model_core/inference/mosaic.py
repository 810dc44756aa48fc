"""A folder of tiles, or a list file naming them, read as one raster through a GDAL VRT.

Orthophoto programmes deliver regions as tiles. Segmenting each tile alone cuts every patch and
context at the tile borders and leaves seams; over a VRT mosaic the patch grid and the contexts
run across the borders as if the region were one file. The tiles must share their CRS, bands and
data type (checked before anything runs); tiles of different pixel sizes are mosaicked at the
finest. Gaps between tiles become nodata: through the tiles' own nodata value, or an alpha band
added to the mosaic when they have none.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .drawn import temporary_folder
from .options import SegmentOptions

log = logging.getLogger(__name__)

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".vrt", ".png", ".jpg", ".jpeg", ".ecw",
                   ".sid", ".bil", ".asc")
LIST_SUFFIXES = (".txt", ".lst", ".list")


def mosaic_sources(path: str, exclude: Sequence[str] = ()) -> list[str] | None:
    """The tiles ``path`` names when it is a folder of rasters or a list file (one path per line,
    relative to the list; blank lines and ``#`` comments skipped); None for a single raster.
    ``exclude``: paths (the run's outputs) that must not be taken for tiles."""
    p = Path(path)
    skip = {os.path.realpath(e) for e in exclude if e}
    if p.is_dir():
        tiles = sorted(str(f) for f in p.iterdir()
                       if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES)
        inside = [t for t in tiles if os.path.realpath(t) in skip]
        if inside:
            raise ValueError(f"the output {inside[0]} lies in the folder of tiles {p}: write it "
                             "to another folder, or it would be read as a tile next time")
        if not tiles:
            raise FileNotFoundError(f"the folder {p} holds no raster tiles (files ending in "
                                    f"{', '.join(RASTER_SUFFIXES)}): give a folder of tiles, a "
                                    "list file (.txt) of their paths, or one raster")
        return tiles
    if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        tiles = [ln if os.path.isabs(ln) or ln.startswith("/vsi") else str(p.parent / ln)
                 for ln in lines if ln and not ln.startswith("#")]
        if not tiles:
            raise ValueError(f"the list file {p} names no tiles: write one raster path per line")
        missing = [t for t in tiles if not t.startswith("/vsi") and not os.path.exists(t)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} tile(s) of {p} do not exist, first "
                                    f"{missing[0]}: correct the list (relative paths are read "
                                    "from the list's folder)")
        return tiles
    return None


def check_tiles(tiles: Sequence[str]) -> bool:
    """Refuse tiles that cannot form one mosaic (message names the tile and the remedy);
    True when the mosaic needs an alpha band (gaps, and tiles without a nodata value)."""
    from osgeo import gdal, osr

    first = None
    area, bounds, nodata = 0.0, None, True
    for path in tiles:
        ds = gdal.Open(str(path))
        if ds is None:
            raise ValueError(f"the tile {path} cannot be opened by GDAL: "
                             f"{gdal.GetLastErrorMsg() or 'not a raster'}; remove it from the "
                             "folder or list")
        gt = ds.GetGeoTransform(can_return_null=True)
        if gt is None or gt[2] or gt[4]:
            raise ValueError(f"the tile {path} has no north-up georeferencing, so its place in "
                             "the mosaic is unknown: georeference it (or segment it alone)")
        srs = osr.SpatialReference(wkt=ds.GetProjection()) if ds.GetProjection() else None
        b1 = ds.GetRasterBand(1)
        info = (ds.RasterCount, b1.DataType, srs)
        if first is None:
            first = (path, *info)
        else:
            if info[0] != first[1]:
                raise ValueError(f"the tile {path} has {info[0]} band(s) but {first[0]} has "
                                 f"{first[1]}: a mosaic needs the same bands in every tile")
            if info[1] != first[2]:
                raise ValueError(f"the tile {path} holds {gdal.GetDataTypeName(info[1])} data "
                                 f"but {first[0]} {gdal.GetDataTypeName(first[2])}: convert the "
                                 "tiles to one data type (gdal_translate -ot)")
            same = (srs is None and first[3] is None) or (
                srs is not None and first[3] is not None and srs.IsSame(first[3]))
            if not same:
                raise ValueError(f"the tile {path} is in another CRS than {first[0]}: reproject "
                                 "the tiles to one CRS first (gdalwarp -t_srs)")
        w, h = ds.RasterXSize * gt[1], ds.RasterYSize * -gt[5]
        box = (gt[0], gt[3] - h, gt[0] + w, gt[3])
        bounds = box if bounds is None else (min(bounds[0], box[0]), min(bounds[1], box[1]),
                                             max(bounds[2], box[2]), max(bounds[3], box[3]))
        area += w * h
        nodata = nodata and b1.GetNoDataValue() is not None
    full = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    return area < full * (1 - 1e-9) and not nodata


def build_mosaic(tiles: Sequence[str], vrt_path: str) -> str:
    """Write the VRT over ``tiles`` to ``vrt_path`` after :func:`check_tiles`; returns it."""
    from osgeo import gdal

    alpha = check_tiles(tiles)
    opts = gdal.BuildVRTOptions(resolution="highest", addAlpha=alpha)
    ds = gdal.BuildVRT(str(vrt_path), [str(t) for t in tiles], options=opts)
    if ds is None:
        raise ValueError(f"GDAL could not build a mosaic of the {len(tiles)} tiles: "
                         f"{gdal.GetLastErrorMsg()}")
    size = (ds.RasterXSize, ds.RasterYSize)
    ds = None
    log.info("mosaic of %d tiles: %d x %d px%s", len(tiles), *size,
             ", gaps marked by an alpha band" if alpha else "")
    return str(vrt_path)


@contextmanager
def mosaic_input(options: SegmentOptions, folder: str | None = None
                 ) -> Iterator[SegmentOptions]:
    """``options`` with a folder or list input replaced by a VRT mosaic of its tiles (written
    in ``folder``, else a temporary folder removed on exit); other inputs unchanged."""
    tiles = mosaic_sources(options.input, (options.output, options.vector or ""))
    if tiles is None:
        yield options
        return
    with temporary_folder(folder, "fctl-mosaic-") as folder:
        vrt = build_mosaic(tiles, os.path.join(folder, "mosaic.vrt"))
        yield dataclasses.replace(options, input=vrt)
