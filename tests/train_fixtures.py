"""Helpers of the training tests: a raster with bright "roofs" on a dark noisy ground, and
label polygons / label rasters for it made with OGR/GDAL (any CRS)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from conftest import write_geotiff

ORIGIN = (500000.0, 5000000.0)      # EPSG:32631, 0.5 m pixels
PIXEL = 0.5
# (column, row, side in px, kind) of the bright squares
ROOFS = [(20, 20, 40, "roof"), (150, 30, 50, "roof"), (60, 150, 45, "shed"),
         (180, 170, 50, "roof"), (100, 90, 30, "shed")]


def make_scene(path: Path, size: int = 256, bands: int = 3, dtype=np.uint8) -> Path:
    rng = np.random.default_rng(1)
    img = rng.integers(10, 70, (bands, size, size)).astype(np.float64)
    for x, y, s, kind in ROOFS:
        img[:, y:y + s, x:x + s] = 220 if kind == "roof" else 160
    if dtype != np.uint8:
        img = img * 40 + 1000           # 16-bit-like values
    return write_geotiff(path, img.astype(dtype))


def roof_rings(epsg: int = 4326, roofs: Sequence = ROOFS, shift: float = 0.0) -> list:
    """(ring coordinates in ``epsg``, kind) of the squares (x/y = lon/lat order)."""
    from osgeo import osr

    src = osr.SpatialReference()
    src.ImportFromEPSG(32631)
    dst = osr.SpatialReference()
    dst.ImportFromEPSG(epsg)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    out = []
    for x, y, s, kind in roofs:
        x0, y0 = ORIGIN[0] + x * PIXEL + shift, ORIGIN[1] - y * PIXEL
        x1, y1 = x0 + s * PIXEL, y0 - s * PIXEL
        ring = [ct.TransformPoint(px, py)[:2]
                for px, py in ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))]
        out.append((ring, kind))
    return out


def write_polygons(path: Path, epsg: int = 4326, field: str | None = "kind",
                   roofs: Sequence = ROOFS, layer: str = "roofs", shift: float = 0.0,
                   values: Sequence | None = None) -> Path:
    """A GeoPackage of the roofs in ``epsg`` with a text class field."""
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer(layer, srs, ogr.wkbPolygon)
    if field:
        lyr.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    for i, (ring, kind) in enumerate(roof_rings(epsg, roofs, shift)):
        r = ogr.Geometry(ogr.wkbLinearRing)
        for x, y in ring:
            r.AddPoint_2D(x, y)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(r)
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetGeometry(poly)
        if field:
            f.SetField(field, values[i] if values is not None else kind)
        lyr.CreateFeature(f)
    ds = None
    return path


def write_label_raster(path: Path, size: int = 256, factor: int = 2) -> Path:
    """Class ids of the scene (0 ground, 1 roof, 2 shed) at ``factor`` x the pixel size."""
    lab = np.zeros((size, size), np.uint8)
    for x, y, s, kind in ROOFS:
        lab[y:y + s, x:x + s] = 1 if kind == "roof" else 2
    coarse = lab[::factor, ::factor]
    return write_geotiff(path, coarse, pixel=PIXEL * factor)
