"""The Dask tests' scene, shared with the mosaic tests: a 900 x 700 px scene made of the bundled
sample, the same scene as 4 tiles, its single-process result, and a LocalCluster of 2 workers."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed import Client, LocalCluster
from osgeo import gdal, ogr

from model_core.inference import SegmentOptions, segment

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample" / "rotterdam_spacenet6_rgb.tif"
W, H, BLOCK = 900, 700, 256    # 3 x 2 blocks of the default model's 256 px patches


def labels_of(path) -> np.ndarray:
    ds = gdal.Open(str(path))   # held while its band is read (GDAL's Python bindings)
    return ds.GetRasterBand(1).ReadAsArray()


def polygons_of(path) -> list[tuple]:
    ds = ogr.Open(str(path))
    return sorted((f.GetField("class_id"), f.GetField("class_name"), round(f.GetField("area"), 6),
                   f.GetGeometryRef().Area()) for f in ds.GetLayer(0))


def write_raster(path: Path, array: np.ndarray, gt, wkt: str, nodata=None) -> Path:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1],
                                              array.shape[0], gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    for i in range(array.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(array[i])
        if nodata is not None:
            ds.GetRasterBand(i + 1).SetNoDataValue(nodata)
    ds = None
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 900 x 700 px scene made of the bundled sample (mirrored to fill it), the same scene
    as 4 tiles, and the single-process result with polygons."""
    d = tmp_path_factory.mktemp("dask")
    src = gdal.Open(str(SAMPLE))
    img = src.ReadAsArray()
    big = np.concatenate([img, img[:, :, ::-1]], axis=2)
    big = np.concatenate([big, big[:, ::-1]], axis=1)[:, :H, :W]
    gt, wkt = src.GetGeoTransform(), src.GetProjection()
    raster = write_raster(d / "scene.tif", np.ascontiguousarray(big), gt, wkt)
    tiles = d / "tiles"
    tiles.mkdir()
    for r, (y0, y1) in enumerate([(0, 300), (300, H)]):
        for c, (x0, x1) in enumerate([(0, 450), (450, W)]):
            tgt = (gt[0] + x0 * gt[1], gt[1], 0.0, gt[3] + y0 * gt[5], 0.0, gt[5])
            write_raster(tiles / f"tile_{r}{c}.tif", np.ascontiguousarray(big[:, y0:y1, x0:x1]),
                   tgt, wkt)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the workers' count below: sums add up in the same order
    try:
        ref = segment(SegmentOptions(str(raster), str(d / "one.tif"),
                                     vector=str(d / "one.gpkg"), min_area=20.0, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    return {"dir": d, "raster": raster, "tiles": tiles, "ref": ref,
            "labels": labels_of(d / "one.tif"), "polygons": polygons_of(d / "one.gpkg")}


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with a nanny each (a killed worker is restarted)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as c:
        with Client(c) as client:
            yield c, client


def run_options(scene, out: Path, **kw) -> SegmentOptions:
    kw.setdefault("input", str(scene["raster"]))
    return SegmentOptions(output=str(out), device="cpu", block_size=BLOCK, threads=1, **kw)
