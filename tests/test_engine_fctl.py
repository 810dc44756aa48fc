"""End to end with the real FCtL network (randomly initialised) on a 2448 x 2448 GeoTIFF, the
paper's DeepGlobe grid (6 x 6 patches of 508 px, medium context x3, global large context)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_geotiff
from osgeo import gdal, ogr

from model_core.checkpoint import ClassInfo, ModelCard, save_checkpoint
from model_core.config import FCtLConfig
from model_core.inference import NODATA, SegmentOptions, segment


def _smooth_image(size: int, seed: int = 0) -> np.ndarray:
    """A 3-band uint8 image with large smooth structures (cheap to make, not noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (3, size // 68 + 1, size // 68 + 1)).astype(np.uint8)
    img = np.kron(coarse, np.ones((68, 68), np.uint8))[:, :size, :size]
    return np.ascontiguousarray(img)


@pytest.mark.slow
def test_fctl_pipeline_on_2448_geotiff(tmp_path):
    cfg = FCtLConfig(backbone="mobilenetv3_small_050", num_classes=7, patch_size=508,
                     medium_context="x3", large_context="global", decoder_channels=32)
    torch.manual_seed(0)
    from model_core.models import FCtL

    classes = [ClassInfo(i, n, c) for i, (n, c) in enumerate([
        ("unknown", (0, 0, 0)), ("urban", (0, 255, 255)), ("agriculture", (255, 255, 0)),
        ("rangeland", (255, 0, 255)), ("forest", (0, 255, 0)), ("water", (0, 0, 255)),
        ("barren", (255, 255, 255))])]
    ckpt = save_checkpoint(tmp_path / "fctl.safetensors", FCtL(cfg),
                           ModelCard(cfg, classes, gsd=0.5, name="random FCtL"))
    img = _smooth_image(2448)
    img[:, 2000:2100, 100:300] = 0          # nodata area
    src = write_geotiff(tmp_path / "big.tif", img, nodata=0, pixel=0.5)
    res = segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), model=str(ckpt),
                                 vector=str(tmp_path / "out.gpkg"), min_area=200,
                                 batch_size=4, device="auto"))
    assert res.grid == (6, 6) and res.patches == 36
    assert res.device == ("cuda" if torch.cuda.is_available() else "cpu")
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (2448, 2448)
    assert ds.GetGeoTransform() == gdal.Open(str(src)).GetGeoTransform()
    out = ds.ReadAsArray()
    nodata = (img == 0).any(axis=0)
    assert (out[nodata] == NODATA).all()
    assert (out[~nodata] < 7).all()
    assert sum(res.class_pixels.values()) == (~nodata).sum()
    assert ds.GetRasterBand(1).GetCategoryNames()[:7] == [c.name for c in classes]
    vec = ogr.Open(str(tmp_path / "out.gpkg"))   # keep the dataset alive while its layer is used
    lyr = vec.GetLayer(0)
    assert lyr.GetFeatureCount() >= 1
    total = sum(f.GetField("area") for f in lyr)
    assert total == pytest.approx((~nodata).sum() * 0.25)


@pytest.mark.slow
@pytest.mark.shared_data
def test_real_deepglobe_image_through_the_engine(shared_data, tmp_path):
    """A real 2448 px DeepGlobe JPEG (no georeferencing) with the pixel-rule model: labels are
    exactly the pixel rule everywhere, on the paper's 6 x 6 grid with x3 and global contexts."""
    from model_core.inference.testing import modulo_model

    jpg = sorted((shared_data / "deepglobe_unlabeled").glob("*_sat.jpg"))[0]
    model, card = modulo_model(7, patch_size=508)
    res = segment(SegmentOptions(str(jpg), str(tmp_path / "out.tif"), batch_size=6,
                                 device="cpu"), model=model, card=card)
    assert res.grid == (6, 6)
    src = gdal.Open(str(jpg)).ReadAsArray()[0]
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(), src % 7)
