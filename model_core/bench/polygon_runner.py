"""Measuring the polygon step (sieve + polygonise) alone, without torch, on synthetic classes.

``python -m model_core.bench.polygon_runner make PATH WIDTH HEIGHT`` writes a class raster of
smooth random regions (6 classes, 0.5 m pixels, EPSG:32631) sprinkled with one-pixel specks and
with a nodata corner, in strips (bounded memory whatever its size).
``python -m model_core.bench.polygon_runner run RASTER WORKDIR [--one-pass]`` sieves it and
polygonises it as ``segment --vector`` does and prints one JSON line: seconds per stage, polygon
count, GeoPackage size, peak RSS of this process. ``--one-pass`` runs GDAL's whole-band sieve
and polygoniser instead (the former implementation), for comparison. Nothing here imports torch,
so the RSS is that of the polygon step plus Python, numpy and GDAL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rss import peak_rss_mb

log = logging.getLogger(__name__)

NODATA = 255
CLASSES = 6


@dataclass(frozen=True)
class _Class:
    id: int
    name: str


def make_classes(path: str | Path, width: int, height: int, cell: int = 96,
                 speckle: float = 0.002, seed: int = 0) -> Path:
    """A uint8 GeoTIFF of ``CLASSES`` classes: contour bands of bilinear noise on a ``cell`` px
    grid, one-pixel specks of random classes (``speckle`` of the pixels) and nodata in the top
    left corner (a triangle of 1/20 of the width)."""
    from osgeo import gdal, osr

    from ..inference.polygons import CREATION_OPTIONS

    rng = np.random.default_rng(seed)
    grid = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), width, height, 1, gdal.GDT_Byte,
                                              options=CREATION_OPTIONS)
    if ds is None:
        raise OSError(f"cannot create {path}: {gdal.GetLastErrorMsg()}")
    ds.SetGeoTransform((500000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    band = ds.GetRasterBand(1)
    band.SetNoDataValue(NODATA)
    xs = (np.arange(width) + 0.5) / cell
    ix = xs.astype(np.int64)
    fx = (xs - ix).astype(np.float32)
    corner = width // 20
    rows = max(1, 2_000_000 // width)
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        ys = (np.arange(y0, y1) + 0.5) / cell
        iy = ys.astype(np.int64)
        fy = (ys - iy).astype(np.float32)[:, None]
        top = grid[iy][:, ix] * (1 - fx) + grid[iy][:, ix + 1] * fx
        bottom = grid[iy + 1][:, ix] * (1 - fx) + grid[iy + 1][:, ix + 1] * fx
        v = top * (1 - fy) + bottom * fy
        cls = (v * (2 * CLASSES)).astype(np.uint8) % CLASSES
        srng = np.random.default_rng([seed, y0])
        specks = srng.random(cls.shape) < speckle
        cls[specks] = srng.integers(0, CLASSES, int(specks.sum()), dtype=np.uint8)
        if y0 < corner:
            yy = np.arange(y0, y1)[:, None]
            cls[(np.arange(width)[None, :] + yy) < corner] = NODATA
        band.WriteArray(cls, 0, y0)
        band.FlushCache()
    ds = None
    return Path(path)


def _one_pass(raster: Path, sieved: Path, gpkg: Path, threshold: int) -> int:
    """The former polygon step: GDAL's sieve and polygoniser over the whole band, one
    transaction, then a pass over every feature for its fields."""
    from osgeo import gdal, ogr

    src = gdal.Open(str(raster))
    dst = gdal.GetDriverByName("GTiff").CreateCopy(str(sieved), src)
    sband = src.GetRasterBand(1)
    gdal.SieveFilter(sband, sband.GetMaskBand(), dst.GetRasterBand(1), threshold, 4)
    dst = src = None
    ds = gdal.Open(str(sieved))
    band = ds.GetRasterBand(1)
    out = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg))
    layer = out.CreateLayer("classes", ds.GetSpatialRef(), ogr.wkbPolygon)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    layer.CreateField(ogr.FieldDefn("area", ogr.OFTReal))
    layer.StartTransaction()
    gdal.Polygonize(band, band.GetMaskBand(), layer, 0, [])
    layer.CommitTransaction()
    layer.StartTransaction()
    for fid in [f.GetFID() for f in layer]:
        f = layer.GetFeature(fid)
        f.SetField("class_name", f"class {f.GetField(0)}")
        f.SetField("area", f.GetGeometryRef().GetArea())
        layer.SetFeature(f)
    layer.CommitTransaction()
    n = layer.GetFeatureCount()
    layer = out = ds = None
    return n


def run_step(raster: str | Path, workdir: str | Path, threshold: int = 25,
             one_pass: bool = False) -> dict[str, float]:
    """Sieve (``threshold`` px) and polygonise ``raster`` into ``workdir``; times, counts and
    this process's peak RSS (which includes everything it did before)."""
    from ..inference.polygons import polygonize, sieve

    raster, workdir = Path(raster), Path(workdir)
    sieved, gpkg = workdir / "sieved.tif", workdir / "polygons.gpkg"
    for p in (sieved, gpkg):
        p.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if one_pass:
        n = _one_pass(raster, sieved, gpkg, threshold)
        t1 = t0
    else:
        sieve(raster, sieved, threshold)
        t1 = time.perf_counter()
        n = polygonize(sieved, gpkg, "classes",
                       [_Class(i, f"class {i}") for i in range(CLASSES)])
    t2 = time.perf_counter()
    from osgeo import gdal
    ds = gdal.Open(str(raster))
    return {"width": ds.RasterXSize, "height": ds.RasterYSize, "one_pass": one_pass,
            "sieve_s": t1 - t0, "polygonize_s": t2 - t1, "total_s": t2 - t0, "polygons": n,
            "gpkg_mb": os.path.getsize(gpkg) / 2 ** 20,
            "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("path")
    m.add_argument("width", type=int)
    m.add_argument("height", type=int)
    r = sub.add_parser("run")
    r.add_argument("raster")
    r.add_argument("workdir")
    r.add_argument("--threshold", type=int, default=25)
    r.add_argument("--one-pass", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "make":
        make_classes(args.path, args.width, args.height)
    else:
        print(json.dumps(run_step(args.raster, args.workdir, args.threshold, args.one_pass)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
