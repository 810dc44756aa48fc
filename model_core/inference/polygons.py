"""Class polygons: sieve (minimum area) then polygonise to a GeoPackage layer, in bounded memory.

Fields: ``class_id`` (int), ``class_name`` (str), ``area`` (real): square metres on the ground
in every CRS (planar in projected CRSs, whatever their unit; on the ellipsoid in geographic ones,
:mod:`model_core.ground`), pixels only for rasters without a CRS; the layer's description says
which. Nodata pixels get no polygon; invalid geometries are repaired with MakeValid.

Memory stays flat whatever the raster's size and the number of polygons:

* sieving runs GDAL's filter tile by tile, each tile inside a halo twice the threshold wide
  (:mod:`.polygon_sieve`): the same regions go as in one pass over the raster;
* polygonising runs GDAL's polygoniser on strips of rows and unions the pieces of regions that
  cross strip borders (:mod:`.polygon_strips`; large regions by edge cancellation,
  :mod:`.polygon_edges`): the same polygons as one pass, up to vertex order; only one region
  at a time is ever held whole;
* features are written in transactions of :data:`TRANSACTION_FEATURES`, with a spatial index,
  and GDAL's block cache is emptied after each strip or row of tiles.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..ground import srs_of
from .options import Cancelled, CancelFn
from .polygon_sieve import sieve_bands
from .polygon_strips import DEFAULT_STRIP_PIXELS, iter_regions, polygon_parts, to_map

if TYPE_CHECKING:   # the checkpoint module imports torch; polygons need only GDAL
    from ..checkpoint import ClassInfo

log = logging.getLogger(__name__)

ProgressFn = Callable[[float], None]

# as writers.CREATION_OPTIONS (kept here: that module imports torch, polygons need only GDAL)
CREATION_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]

# features per GeoPackage transaction: large enough for speed, small enough that SQLite's
# journal and page cache stay small
TRANSACTION_FEATURES = 20_000

_polygons = polygon_parts   # former name, kept for callers


def pixel_area(geotransform: Sequence[float] | None) -> float:
    """Area of one pixel in square map units (1 without a geotransform)."""
    if geotransform is None:
        return 1.0
    gt = geotransform
    return abs(gt[1] * gt[5] - gt[2] * gt[4]) or 1.0


def sieve(src_path: str | Path, dst_path: str | Path | None, threshold_px: int,
          progress: ProgressFn | None = None, is_cancelled: CancelFn | None = None) -> None:
    """Merge regions smaller than ``threshold_px`` pixels (4-connected) into their largest
    neighbour. ``dst_path`` None sieves ``src_path`` in place; otherwise ``dst_path`` is a new
    GeoTIFF with the same georeferencing, colour table and nodata."""
    from osgeo import gdal

    in_place = dst_path is None
    # In place, tiles must still read their halo unsieved: sieve into a sibling, copy back.
    target = Path(str(src_path) + ".sieving.tif") if in_place else Path(dst_path)
    src = gdal.Open(str(src_path), gdal.GA_ReadOnly)
    if src is None:
        raise OSError(f"cannot open {src_path} to sieve it: {gdal.GetLastErrorMsg()}")
    dst = None
    try:
        dst = _create_like(src, target)
        sieve_bands(src.GetRasterBand(1), dst.GetRasterBand(1), threshold_px,
                    progress=None if progress is None else
                    (lambda f: progress(0.9 * f if in_place else f)),
                    is_cancelled=is_cancelled)
        dst.FlushCache()
        src = None
        if in_place:
            _copy_band(dst.GetRasterBand(1), str(src_path), is_cancelled)
            if progress is not None:
                progress(1.0)
    finally:
        dst = src = None
        if in_place:
            _remove(target)


def _create_like(src, path: Path):
    """A new GeoTIFF of ``src``'s size, georeferencing, nodata and colour table."""
    from osgeo import gdal

    sband = src.GetRasterBand(1)
    dst = gdal.GetDriverByName("GTiff").Create(str(path), src.RasterXSize, src.RasterYSize, 1,
                                               sband.DataType, options=CREATION_OPTIONS)
    if dst is None:
        raise OSError(f"cannot create {path}: {gdal.GetLastErrorMsg()}")
    gt = src.GetGeoTransform(can_return_null=True)
    if gt is not None:
        dst.SetGeoTransform(gt)
    dst.SetProjection(src.GetProjection())
    dband = dst.GetRasterBand(1)
    if sband.GetNoDataValue() is not None:
        dband.SetNoDataValue(sband.GetNoDataValue())
    if sband.GetColorTable() is not None:
        dband.SetColorTable(sband.GetColorTable())
    return dst


def _copy_band(band, path: str, is_cancelled: CancelFn | None, rows: int = 1024) -> None:
    """Copy ``band`` into band 1 of the raster ``path`` (same size), ``rows`` at a time."""
    from osgeo import gdal

    ds = gdal.Open(path, gdal.GA_Update)
    if ds is None:
        raise OSError(f"cannot open {path} to write the sieved classes back: "
                      f"{gdal.GetLastErrorMsg()}")
    out = ds.GetRasterBand(1)
    for y in range(0, band.YSize, rows):
        if is_cancelled is not None and is_cancelled():
            raise Cancelled("segmentation cancelled while sieving")
        n = min(rows, band.YSize - y)
        out.WriteArray(band.ReadAsArray(0, y, band.XSize, n), 0, y)
        out.FlushCache()
        band.FlushCache()
    ds.FlushCache()
    out = ds = None


def _remove(path: Path) -> None:
    for p in (path, Path(str(path) + ".aux.xml")):
        try:
            os.remove(p)
        except FileNotFoundError:
            pass


def polygonize(raster_path: str | Path, gpkg_path: str | Path, layer_name: str,
               classes: Sequence[ClassInfo], progress: ProgressFn | None = None,
               is_cancelled: CancelFn | None = None,
               strip_pixels: int = DEFAULT_STRIP_PIXELS) -> int:
    """Polygons of the class raster into a new GeoPackage; returns the number of features.

    ``strip_pixels``: pixels polygonised at once (memory, not the result, depends on it). On any
    error or cancellation the files are closed before the exception leaves, so the caller can
    delete them (an open file cannot be deleted on Windows).
    """
    from osgeo import gdal, ogr

    ds = gdal.Open(str(raster_path))
    if ds is None:
        raise OSError(f"cannot open {raster_path}: {gdal.GetLastErrorMsg()}")
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg_path))
    if out is None:
        raise OSError(f"cannot create {gpkg_path}: {gdal.GetLastErrorMsg()}")
    try:
        return _polygonize_into(ds, out, layer_name, classes, progress, is_cancelled,
                                strip_pixels)
    finally:
        out = ds = None   # closes both, also when an exception is on its way out


def _polygonize_into(ds, out, layer_name: str, classes: Sequence[ClassInfo],
                     progress: ProgressFn | None, is_cancelled: CancelFn | None,
                     strip_pixels: int) -> int:
    from osgeo import gdal, ogr

    from ..ground import ground_of

    wkt = ds.GetProjection()
    gt = ds.GetGeoTransform(can_return_null=True)
    ground = ground_of(gt, wkt, ds.RasterXSize, ds.RasterYSize)
    # areas in pixels are taken on the pixel-coordinate polygon (exact, any geotransform)
    area_of, unit = (ground.area_transform(), "square metres") if ground.known else \
        (None, "pixels")
    srs = srs_of(wkt)
    layer = out.CreateLayer(layer_name, srs, ogr.wkbPolygon,
                            options=["GEOMETRY_NAME=geom", "SPATIAL_INDEX=YES",
                                     f"DESCRIPTION=FCtL classes; area in {unit}"])
    if layer is None:
        raise OSError(f"cannot create layer {layer_name!r}: {gdal.GetLastErrorMsg()}")
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("area", ogr.OFTReal))
    defn = layer.GetLayerDefn()
    names = {c.id: c.name for c in classes}
    count = repaired = 0
    in_transaction = False
    try:
        layer.StartTransaction()
        in_transaction = True
        for value, piece, known_valid in iter_regions(ds.GetRasterBand(1), strip_pixels,
                                                      progress, is_cancelled):
            parts = [piece]
            if not known_valid and not piece.IsValid():
                repaired += 1
                parts = polygon_parts(piece.MakeValid())
            for part in parts:
                geom = to_map(part, gt)
                feat = ogr.Feature(defn)
                feat.SetField(0, int(value))
                feat.SetField(1, names.get(int(value), f"class {value}"))
                feat.SetField(2, area_of(geom) if area_of is not None else part.GetArea())
                feat.SetGeometryDirectly(geom)
                if layer.CreateFeature(feat) != 0:
                    raise OSError(f"cannot write polygon {count + 1}: {gdal.GetLastErrorMsg()}")
                count += 1
                if count % TRANSACTION_FEATURES == 0:
                    layer.CommitTransaction()
                    layer.StartTransaction()
        layer.CommitTransaction()
        in_transaction = False
        if repaired:
            log.info("repaired %d invalid polygon(s) with MakeValid", repaired)
        return count
    finally:
        if in_transaction:
            layer.RollbackTransaction()
        # drop every handle of this frame: a traceback keeps the frame (and files) alive
        feat = geom = piece = parts = part = layer = defn = ds = out = None  # noqa: F841
