"""Class polygons: GDAL sieve (minimum area) then polygonise to a GeoPackage layer.

Fields: ``class_id`` (int), ``class_name`` (str), ``area`` (real): square metres on the ground
in every CRS (planar in projected CRSs, whatever their unit; on the ellipsoid in geographic ones,
:mod:`model_core.ground`), pixels only for rasters without a CRS; the layer's description says
which. Nodata pixels get no polygon; invalid
geometries are repaired with MakeValid. Both passes stream through GDAL (scanline algorithms),
so memory grows with the number of polygons, not with the raster.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from ..checkpoint import ClassInfo
from .options import Cancelled, CancelFn

log = logging.getLogger(__name__)

ProgressFn = Callable[[float], None]


def _gdal_progress(progress: ProgressFn | None, is_cancelled: CancelFn | None):
    def callback(fraction, _message, _data):
        if progress is not None:
            progress(float(fraction))
        return 0 if (is_cancelled is not None and is_cancelled()) else 1
    return callback


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

    from .writers import CREATION_OPTIONS

    src = gdal.Open(str(src_path), gdal.GA_Update if dst_path is None else gdal.GA_ReadOnly)
    if src is None:
        raise OSError(f"cannot open {src_path} to sieve it: {gdal.GetLastErrorMsg()}")
    sband = src.GetRasterBand(1)
    if dst_path is None:
        dst, dband = src, sband
    else:
        dst = gdal.GetDriverByName("GTiff").Create(str(dst_path), src.RasterXSize,
                                                   src.RasterYSize, 1, gdal.GDT_Byte,
                                                   options=CREATION_OPTIONS)
        if dst is None:
            raise OSError(f"cannot create {dst_path}: {gdal.GetLastErrorMsg()}")
        gt = src.GetGeoTransform(can_return_null=True)
        if gt is not None:
            dst.SetGeoTransform(gt)
        dst.SetProjection(src.GetProjection())
        dband = dst.GetRasterBand(1)
        dband.SetNoDataValue(sband.GetNoDataValue())
        if sband.GetColorTable() is not None:
            dband.SetColorTable(sband.GetColorTable())
    err = gdal.SieveFilter(sband, sband.GetMaskBand(), dband, int(threshold_px), 4,
                           callback=_gdal_progress(progress, is_cancelled))
    dst.FlushCache()
    dband = sband = None
    dst = src = None
    if is_cancelled is not None and is_cancelled():
        raise Cancelled("segmentation cancelled while sieving")
    if err != 0:
        raise OSError(f"sieving {src_path} failed: {gdal.GetLastErrorMsg()}")


def polygonize(raster_path: str | Path, gpkg_path: str | Path, layer_name: str,
               classes: Sequence[ClassInfo], progress: ProgressFn | None = None,
               is_cancelled: CancelFn | None = None) -> int:
    """Polygons of the class raster into a new GeoPackage; returns the number of features.

    On any error or cancellation the files are closed before the exception leaves, so the
    caller can delete them (an open file cannot be deleted on Windows).
    """
    from osgeo import gdal, ogr

    ds = gdal.Open(str(raster_path))
    if ds is None:
        raise OSError(f"cannot open {raster_path}: {gdal.GetLastErrorMsg()}")
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg_path))
    if out is None:
        raise OSError(f"cannot create {gpkg_path}: {gdal.GetLastErrorMsg()}")
    try:
        return _polygonize_into(ds, out, layer_name, classes, progress, is_cancelled)
    finally:
        out = ds = None   # closes both, also when an exception is on its way out


def _polygonize_into(ds, out, layer_name: str, classes: Sequence[ClassInfo],
                     progress: ProgressFn | None, is_cancelled: CancelFn | None) -> int:
    from osgeo import gdal, ogr, osr

    from ..ground import ground_of

    band = ds.GetRasterBand(1)
    wkt = ds.GetProjection()
    gt = ds.GetGeoTransform(can_return_null=True)
    ground = ground_of(gt, wkt, ds.RasterXSize, ds.RasterYSize)
    if ground.known:
        area_of, unit = ground.area_transform(), "square metres"
    else:
        per_px = pixel_area(gt)
        area_of, unit = (lambda g: g.GetArea() / per_px), "pixels"
    srs = None
    if wkt:
        srs = osr.SpatialReference()
        srs.ImportFromWkt(wkt)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    layer = out.CreateLayer(layer_name, srs, ogr.wkbPolygon,
                            options=["GEOMETRY_NAME=geom",
                                     f"DESCRIPTION=FCtL classes; area in {unit}"])
    if layer is None:
        raise OSError(f"cannot create layer {layer_name!r}: {gdal.GetLastErrorMsg()}")
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("area", ogr.OFTReal))

    def step(f: float) -> None:   # polygonising is 80% of this step, the fields the rest
        if progress is not None:
            progress(f)

    def stop() -> bool:
        return is_cancelled is not None and bool(is_cancelled())

    try:
        layer.StartTransaction()
        err = gdal.Polygonize(band, band.GetMaskBand(), layer, 0, [],
                              callback=_gdal_progress(lambda f: step(0.8 * f), is_cancelled))
        layer.CommitTransaction()
        if stop():
            raise Cancelled("segmentation cancelled while polygonising")
        if err != 0:
            raise OSError(f"polygonising failed: {gdal.GetLastErrorMsg()}")

        names = {c.id: c.name for c in classes}
        total = max(layer.GetFeatureCount(), 1)
        repaired = 0
        layer.StartTransaction()
        fids = [f.GetFID() for f in layer]
        for n, fid in enumerate(fids):
            feat = layer.GetFeature(fid)
            cid = feat.GetFieldAsInteger("class_id")
            geom = feat.GetGeometryRef()
            pieces = [geom]
            if not geom.IsValid():
                repaired += 1
                pieces = _polygons(geom.MakeValid())
            for i, piece in enumerate(pieces):
                f = feat if i == 0 else ogr.Feature(layer.GetLayerDefn())
                f.SetField("class_id", cid)
                f.SetField("class_name", names.get(cid, f"class {cid}"))
                f.SetField("area", area_of(piece))
                f.SetGeometry(piece)
                if i == 0:
                    layer.SetFeature(f)
                else:
                    layer.CreateFeature(f)
            if not pieces:
                layer.DeleteFeature(fid)
            if n % 2000 == 0:
                step(0.8 + 0.2 * n / total)
                if stop():
                    raise Cancelled("segmentation cancelled while polygonising")
        layer.CommitTransaction()
        if repaired:
            log.info("repaired %d invalid polygon(s) with MakeValid", repaired)
        return layer.GetFeatureCount()
    finally:
        # drop every handle of this frame: a traceback keeps the frame (and files) alive
        feat = f = geom = pieces = band = layer = ds = out = None  # noqa: F841


def _polygons(geom) -> list:
    """Polygonal parts of a MakeValid result (lines and points of collapsed parts dropped)."""
    from osgeo import ogr

    if geom is None or geom.IsEmpty():
        return []
    t = ogr.GT_Flatten(geom.GetGeometryType())
    if t == ogr.wkbPolygon:
        return [geom.Clone()]
    if t in (ogr.wkbMultiPolygon, ogr.wkbGeometryCollection):
        out = []
        for i in range(geom.GetGeometryCount()):
            out.extend(_polygons(geom.GetGeometryRef(i)))
        return out
    return []
