"""A folder of tiles, or a list file naming them, read as one raster through a GDAL VRT.

Orthophoto programmes deliver regions as tiles. Segmenting each tile alone cuts every patch and
context at the tile borders and leaves seams; over a VRT mosaic the patch grid and the contexts
run across the borders as if the region were one file. The tiles must share their bands and data
type (checked before anything runs); tiles in another CRS than most (a programme crossing a UTM
zone boundary) are reprojected on the fly to the CRS most tiles have, and tiles placed by GCPs
or a turned geotransform are warped north-up with them; tiles of different pixel sizes are
mosaicked at the finest. Gaps between tiles become nodata: through the tiles' own nodata value,
or an alpha band added to the mosaic when they have none. gdalbuildvrt drops a tile with only a
warning when it differs from the first in ways this module can mend (its bands named otherwise,
another colour table): such tiles are read through VRTs that make them alike, and a tile GDAL
would still drop is an error naming it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
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


@dataclasses.dataclass
class TileCheck:
    """What :func:`check_tiles` found: whether the mosaic needs an alpha band, the CRS it is
    built in (that of the most tiles), per tile whether it is warped onto its grid (in another
    CRS, or not north-up: a turned geotransform, or GCPs only), and its bands' colour names."""

    alpha: bool
    crs_wkt: str
    warp: list[bool]
    colours: list[tuple[int, ...]]


def check_tiles(tiles: Sequence[str]) -> TileCheck:
    """Refuse tiles that cannot form one mosaic (message names the tile and the remedy)."""
    from osgeo import gdal, osr

    from .warped import placement

    first = None
    area, bounds, nodata = 0.0, None, True
    crs: list[osr.SpatialReference | None] = []
    turned: list[bool] = []
    colours: list[tuple[int, ...]] = []
    for path in tiles:
        ds = gdal.Open(str(path))
        if ds is None:
            raise ValueError(f"the tile {path} cannot be opened by GDAL: "
                             f"{gdal.GetLastErrorMsg() or 'not a raster'}; remove it from the "
                             "folder or list")
        gt = ds.GetGeoTransform(can_return_null=True)
        gcps = placement(ds) == "gcps"
        if gt is None and not gcps:
            raise ValueError(f"the tile {path} has no geotransform or GCPs, so its place in the "
                             "mosaic is unknown: georeference it (or segment it alone)")
        wkt = ds.GetGCPProjection() if gcps else ds.GetProjection()
        srs = osr.SpatialReference(wkt=wkt) if wkt else None
        turned.append(gcps or bool(gt[2] or gt[4]))
        if turned[-1] and srs is None:
            raise ValueError(f"the tile {path} is turned (not north-up) and has no CRS: "
                             "assign its CRS (gdal_edit.py -a_srs) or segment it alone")
        colours.append(tuple(ds.GetRasterBand(b + 1).GetColorInterpretation()
                             for b in range(ds.RasterCount)))
        b1 = ds.GetRasterBand(1)
        info = (ds.RasterCount, b1.DataType)
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
            if (srs is None) != (crs[0] is None):
                raise ValueError(f"the tile {path} has {'no' if srs is None else 'a'} CRS but "
                                 f"{first[0]} has {'one' if srs is None else 'none'}: assign the "
                                 "tiles' CRS (gdal_edit.py -a_srs)")
        crs.append(srs)
        if any(turned):   # the mosaic is of warped views (alpha included) whatever the gaps
            continue
        w, h = ds.RasterXSize * gt[1], ds.RasterYSize * -gt[5]
        box = (gt[0], gt[3] - h, gt[0] + w, gt[3])
        bounds = box if bounds is None else (min(bounds[0], box[0]), min(bounds[1], box[1]),
                                             max(bounds[2], box[2]), max(bounds[3], box[3]))
        area += w * h
        nodata = nodata and b1.GetNoDataValue() is not None
    # The tiles' own CRSs: the mosaic is built in the one most tiles have (the first on a tie).
    groups: list[tuple[osr.SpatialReference | None, list[int]]] = []
    for i, srs in enumerate(crs):
        for ref, members in groups:
            if srs is None or ref.IsSame(srs):
                members.append(i)
                break
        else:
            groups.append((srs, [i]))
    ref, members = max(groups, key=lambda g: len(g[1]))
    main = set(members)
    warp = [i not in main or t for i, t in enumerate(turned)]
    wkt = ref.ExportToWkt() if ref is not None else ""
    if any(warp):
        return TileCheck(True, wkt, warp, colours)
    full = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    return TileCheck(area < full * (1 - 1e-9) and not nodata, wkt, warp, colours)


def build_mosaic(tiles: Sequence[str], vrt_path: str) -> str:
    """Write the VRT over ``tiles`` to ``vrt_path`` after :func:`check_tiles`; returns it.

    Tiles in another CRS than most, or not north-up (a turned geotransform, GCPs only), are
    warped on the fly (bilinear) onto the pixel grid of the finest north-up tile in the
    mosaic's CRS; then every tile is read through a warped VRT with an alpha band (their nodata
    becomes transparent), so that the area a warped tile's footprint does not cover never hides
    its neighbour where they overlap."""
    from osgeo import gdal

    check = check_tiles(tiles)
    folder = os.path.dirname(str(vrt_path))
    names = [str(t) for t in tiles]
    warp = any(check.warp)
    sources = _expanded_palettes(names, folder, warp)
    if warp:
        sources = _aligned_views(sources, check, folder, names)
    sources = _same_colours(sources, [c != check.colours[0] for c in check.colours], folder)
    opts = gdal.BuildVRTOptions(resolution="highest", addAlpha=check.alpha and not warp)
    messages: list[str] = []
    gdal.PushErrorHandler(lambda cls, no, msg: messages.append(msg))
    try:
        ds = gdal.BuildVRT(str(vrt_path), sources, options=opts)
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise ValueError(f"GDAL could not build a mosaic of the {len(tiles)} tiles: "
                         f"{messages[-1] if messages else gdal.GetLastErrorMsg()}")
    skipped = [m for m in messages if "Skipping" in m]
    if skipped:   # gdalbuildvrt only warns when it leaves a tile out
        ds = None
        why, _, name = skipped[0].rpartition("Skipping")
        name = name.strip()
        tile = next((t for t, v in zip(tiles, sources) if v == name), name)
        raise ValueError(f"GDAL left {len(skipped)} tile(s) out of the mosaic, first {tile}: "
                         f"{why.strip().rstrip('.')}; make the tiles alike (gdal_translate; "
                         "-expand rgb turns paletted tiles into RGB) or segment them apart")
    size = (ds.RasterXSize, ds.RasterYSize)
    ds = None
    log.info("mosaic of %d tiles: %d x %d px%s", len(tiles), *size,
             ", gaps marked by an alpha band" if check.alpha else "")
    return str(vrt_path)


def _expanded_palettes(tiles: list[str], folder: str, warp: bool) -> list[str]:
    """Paletted tiles read as their colours (RGBA VRTs) where one colour table cannot serve the
    whole mosaic (gdalbuildvrt keeps the first tile's and warns), or before they are warped
    (bilinear must blend colours, not indices); otherwise the tiles themselves (the mosaic's
    one table is expanded later, as for any paletted raster)."""
    from osgeo import gdal

    from .palette import colour_table, expand_palette, is_paletted

    tables = []
    for t in tiles:
        ds = gdal.Open(t)
        if not is_paletted(ds):
            return tiles
        tables.append(colour_table(ds))
    if not warp and all(t == tables[0] for t in tables):
        return tiles
    log.info("the %d tiles are paletted%s: each is read as its colours", len(tiles),
             " and warped" if warp else " with different colour tables")
    return [expand_palette(t, os.path.join(folder, f"colours_{i:05d}_rgba.vrt"), alpha=True)
            for i, t in enumerate(tiles)]


def _same_colours(sources: list[str], differ: list[bool], folder: str) -> list[str]:
    """The sources, those of tiles whose bands' colour names differ from the first tile's (RGB
    named in one tile and not in another: ``differ``) read through a VRT that names them as the
    first source: gdalbuildvrt would leave them out of the mosaic with a mere warning. A warped
    view or an expanded palette names its bands as its tile does (plus an alpha band)."""
    if not any(differ):
        return sources
    from osgeo import gdal

    first = gdal.Open(sources[0])
    names = [first.GetRasterBand(b + 1).GetColorInterpretation() for b in range(first.RasterCount)]
    first = None
    out = list(sources)
    for i in (i for i, d in enumerate(differ) if d):
        view = os.path.join(folder, f"colours_{i:05d}.vrt")
        ds = gdal.Translate(view, sources[i], format="VRT")
        for b, name in enumerate(names[:ds.RasterCount]):
            ds.GetRasterBand(b + 1).SetColorInterpretation(name)
        ds = None
        out[i] = view
    log.info("%d tile(s) with other band colour names than %s are read with its names",
             sum(differ), sources[0])
    return out


def _aligned_views(sources: list[str], check: TileCheck, folder: str, names: Sequence[str]
                   ) -> list[str]:
    """A warped VRT with an alpha band per source, all on one pixel grid in the mosaic's CRS:
    that of the finest north-up tile in it (``check.warp[i]`` False), else GDAL's suggestion
    for the first tile with square pixels. ``names``: the user's tiles, for messages."""
    from osgeo import gdal, osr

    def footprint(i: int):  # noqa: ANN202 (a gdal.Dataset)
        probe = gdal.Warp("", sources[i], format="VRT", dstSRS=check.crs_wkt)
        if probe is None:
            raise ValueError(f"the tile {names[i]} cannot be warped onto the mosaic's grid: "
                             f"{gdal.GetLastErrorMsg()}; reproject it first (gdalwarp -t_srs)")
        return probe

    grids = [gdal.Open(t).GetGeoTransform() for t, w in zip(sources, check.warp) if not w]
    if grids:
        ox, res_x, _, oy, _, res_y = min(grids, key=lambda g: abs(g[1] * g[5]))
    else:
        ox, gw, _, oy, _, gh = footprint(0).GetGeoTransform()
        res_x, res_y = min(abs(gw), abs(gh)), -min(abs(gw), abs(gh))
    out = []
    for i, source in enumerate(sources):
        # GDAL's own footprint of the tile in the mosaic's CRS, snapped outward to the grid
        probe = footprint(i)
        gx, gw, _, gy, _, gh = probe.GetGeoTransform()
        x0, x1 = gx, gx + gw * probe.RasterXSize
        y1, y0 = gy, gy + gh * probe.RasterYSize
        probe = None
        c0 = math.floor((x0 - ox) / res_x + 1e-6)
        c1 = math.ceil((x1 - ox) / res_x - 1e-6)
        r0 = math.floor((y1 - oy) / res_y + 1e-6)
        r1 = math.ceil((y0 - oy) / res_y - 1e-6)
        bounds = (ox + c0 * res_x, oy + r1 * res_y, ox + c1 * res_x, oy + r0 * res_y)
        view = os.path.join(folder, f"tile_{i:05d}.vrt")
        ds = gdal.Warp(view, source, format="VRT", dstSRS=check.crs_wkt, outputBounds=bounds,
                       xRes=res_x, yRes=-res_y, resampleAlg="bilinear", dstAlpha=True)
        if ds is None:
            raise ValueError(f"the tile {names[i]} cannot be warped onto the mosaic's grid: "
                             f"{gdal.GetLastErrorMsg()}; reproject it first (gdalwarp -t_srs)")
        ds = None
        out.append(view)
    name = osr.SpatialReference(wkt=check.crs_wkt).GetName()
    log.info("%d of %d tiles are in another CRS than the others or not north-up (a turned "
             "geotransform, GCPs): warped on the fly (bilinear) to %s (the CRS of the most "
             "tiles, the first on a tie)", sum(check.warp), len(sources), name)
    return out


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
