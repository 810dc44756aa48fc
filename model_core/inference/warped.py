"""Rasters placed on the ground only by ground control points (GCPs) or RPCs, read through
GDAL's warper.

A scanned aerial photo georeferenced in QGIS's Georeferencer without writing a new raster, or a
satellite scene as delivered, carries GCPs (or RPC coefficients) and no geotransform. QGIS draws
such a raster through GDAL's warper onto a north-up grid in the GCPs' CRS (WGS 84 for RPCs); the
engine reads it the same way, so that its pixel size is known, areas are on the ground, and the
class raster and the polygons lie on the input in the map instead of in pixel coordinates with
no place on the ground. The grid covers GDAL's suggested output (QGIS's too) with pixels square
on the ground and as large as the image's own (GDAL suggests pixels square in the CRS's units,
in degrees a third narrower than tall at 50 N); pixels are resampled bilinearly, and the area
outside the image's footprint is masked by an alpha band (or the raster's own nodata value).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def placement(ds) -> str | None:  # noqa: ANN001 (a gdal.Dataset)
    """``"gcps"`` or ``"rpc"`` when ``ds`` is placed on the ground only through those, else None
    (it has a geotransform, or nothing places it)."""
    if ds.GetGeoTransform(can_return_null=True) is not None:
        return None
    if ds.GetGCPCount() >= 3 and ds.GetGCPProjection():
        return "gcps"
    if ds.GetMetadata("RPC"):
        return "rpc"
    return None


def build_warped(path: str, vrt_path: str, how: str) -> str:
    """Write the warped VRT of ``path``, placed by ``how`` (its :func:`placement`: ``"gcps"`` or
    ``"rpc"``), to ``vrt_path``; returns that path."""
    from osgeo import gdal

    from ..ground import ground_of
    from .reader import gdal_open

    ds = gdal_open(path)
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    has_alpha = any(ds.GetRasterBand(i + 1).GetColorInterpretation() == gdal.GCI_AlphaBand
                    for i in range(ds.RasterCount))
    kw = dict(format="VRT", resampleAlg="bilinear", rpc=how == "rpc",
              dstAlpha=nodata is None and not has_alpha, dstNodata=nodata)
    opts = gdal.WarpOptions(**kw)
    out = gdal.Warp(str(vrt_path), ds, options=opts)
    if out is not None:
        out = _square_on_the_ground(out, ds, str(vrt_path), kw, how)
    if out is None:
        raise ValueError(f"{path} is georeferenced by {'GCPs' if how == 'gcps' else 'RPCs'} only "
                         f"and GDAL could not warp it onto a map grid ({gdal.GetLastErrorMsg()}): "
                         "georeference it with a geotransform (gdalwarp, or QGIS's Georeferencer "
                         "writing a new raster)")
    size = (out.RasterXSize, out.RasterYSize)
    metres = ground_of(out.GetGeoTransform(), out.GetProjection(), *size).pixel_size_m
    out = None
    log.info("%s is placed on the ground by %s only: read through GDAL's warper onto a north-up "
             "grid of %d x %d px in the %s CRS (%s pixels), as QGIS draws it; the class raster "
             "and the polygons are on that grid", path,
             f"{ds.GetGCPCount()} GCPs" if how == "gcps" else "RPCs", *size,
             "GCPs'" if how == "gcps" else "RPCs' (WGS 84)",
             "unknown size" if metres is None else f"{metres:.3g} m")
    return str(vrt_path)


def _source_pixel_m(ds, how: str) -> float | None:  # noqa: ANN001 (gdal.Dataset)
    """Side in metres of ``ds``'s centre pixel on the ground (sqrt of its area), through its
    GCPs or RPCs; None when it cannot be measured."""
    from osgeo import gdal

    from ..ground import ground_of

    tr = gdal.Transformer(ds, None, ["METHOD=RPC"] if how == "rpc" else [])
    cx, cy = ds.RasterXSize / 2, ds.RasterYSize / 2
    pts = [tr.TransformPoint(0, x, y) for x, y in ((cx, cy), (cx + 1, cy), (cx, cy + 1))]
    if not all(ok for ok, _ in pts):
        return None
    (x0, y0, _), (x1, y1, _), (x2, y2, _) = (p for _, p in pts)
    # the local affine of the GCPs (RPCs) at the centre, as the middle pixel of a 2 x 2 grid
    a, b, c, d = x1 - x0, x2 - x0, y1 - y0, y2 - y0
    gt = (x0 - a - b, a, b, y0 - c - d, c, d)
    wkt = ds.GetGCPProjection() if how == "gcps" else _wgs84()
    return ground_of(gt, wkt, 2, 2).pixel_size_m


def _wgs84() -> str:
    from osgeo import osr

    s = osr.SpatialReference()
    s.ImportFromEPSG(4326)
    return s.ExportToWkt()


def _square_on_the_ground(out, ds, vrt_path: str, kw: dict, how: str):  # noqa: ANN001
    """GDAL suggests pixels square in the output CRS's units and sized from the footprint's
    diagonal: in degrees they are a third narrower than tall on the ground at 50 N, which would
    stretch what the model sees, and their size drifts from the image's. Warp again with pixels
    square on the ground and as large as the image's own."""
    from osgeo import gdal

    from ..ground import ground_of

    gt = out.GetGeoTransform()
    g = ground_of(gt, out.GetProjection(), out.RasterXSize, out.RasterYSize)
    side = _source_pixel_m(ds, how)
    if g.pixel_m is None or side is None:
        return out
    if all(abs(m / side - 1) <= 0.01 for m in g.pixel_m):
        return out
    xres, yres = gt[1] * side / g.pixel_m[0], -gt[5] * side / g.pixel_m[1]
    bounds = (gt[0], gt[3] + gt[5] * out.RasterYSize, gt[0] + gt[1] * out.RasterXSize, gt[3])
    out = None
    return gdal.Warp(vrt_path, ds, options=gdal.WarpOptions(
        **kw, xRes=xres, yRes=yres, outputBounds=bounds))
