"""Shared fixtures: real GDAL rasters made in the tests, and the optional ../shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

@pytest.fixture
def shared_data() -> Path:
    """../shared/data when present; tests that need it skip on a fresh clone without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (fresh clone): real-data test skipped")
    return SHARED_DATA

def write_geotiff(path: Path, array: np.ndarray, *, epsg: int | None = 32631,
                  origin: tuple[float, float] = (500000.0, 5000000.0), pixel: float = 0.5,
                  nodata: float | None = None, driver: str = "GTiff") -> Path:
    """Write a (bands, H, W) or (H, W) array as a georeferenced raster with GDAL."""
    from osgeo import gdal, osr

    arr = array[None] if array.ndim == 2 else array
    bands, h, w = arr.shape
    dtype = {np.uint8: gdal.GDT_Byte, np.uint16: gdal.GDT_UInt16, np.float32: gdal.GDT_Float32,
             np.int16: gdal.GDT_Int16, np.int32: gdal.GDT_Int32}[arr.dtype.type]
    ds = gdal.GetDriverByName(driver).Create(str(path), w, h, bands, dtype)
    ds.SetGeoTransform((origin[0], pixel, 0.0, origin[1], 0.0, -pixel))
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    for i in range(bands):
        band = ds.GetRasterBand(i + 1)
        band.WriteArray(arr[i])
        if nodata is not None:
            band.SetNoDataValue(nodata)
    ds.FlushCache()
    ds = None
    return path


@pytest.fixture(autouse=True, scope="session")
def _no_remembered_dock_choices():
    """The dock remembers its choices in the test profile's QgsSettings (``fctl/...``); those of
    an earlier local run would otherwise stand in for the defaults the tests expect."""
    from qgis.core import QgsSettings

    QgsSettings().remove("fctl")
    yield
