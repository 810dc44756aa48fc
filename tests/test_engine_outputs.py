"""Polygon output (sieve, polygonise, fields, areas, validity) and the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, write_geotiff
from osgeo import gdal, ogr

from model_core.inference import NODATA, SegmentOptions, segment
from model_core.inference.testing import modulo_model

K = 4


def _blocks(seed=0) -> np.ndarray:
    """A 3-band image whose band 1 gives classes (value % 4) in 16 px blocks plus specks."""
    rng = np.random.default_rng(seed)
    h, w = 96, 112
    cls = np.kron(rng.integers(0, K, (h // 16, w // 16)), np.ones((16, 16), int))
    cls[40:42, 40:42] = (cls[40, 40] + 1) % K          # a 4 px speck
    cls[70, 90] = (cls[70, 90] + 2) % K                 # a 1 px speck
    img = np.stack([cls + 4 * rng.integers(0, 50, (h, w))] * 3).astype(np.uint8)
    return img


def _features(path, layer="classes"):
    ds = ogr.Open(str(path))
    lyr = ds.GetLayerByName(layer)
    out = [(f.GetField("class_id"), f.GetField("class_name"), f.GetField("area"),
            f.GetGeometryRef().Clone()) for f in lyr]
    defn = lyr.GetLayerDefn()
    fields = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    srs = lyr.GetSpatialRef()
    return out, fields, srs


def test_polygons_fields_areas_and_validity(tmp_path):
    img = _blocks()
    src = write_geotiff(tmp_path / "in.tif", img, pixel=0.5)
    model, card = modulo_model(K, patch_size=32)
    res = segment(SegmentOptions(str(src), str(tmp_path / "o.tif"), vector=str(tmp_path / "o.gpkg"),
                                 min_overlap=8, device="cpu"), model=model, card=card)
    feats, fields, srs = _features(tmp_path / "o.gpkg")
    assert fields == ["class_id", "class_name", "area"]
    assert srs is not None and srs.GetAuthorityCode(None) == "32631"
    names = {c.id: c.name for c in card.classes}
    per_class: dict[int, float] = {}
    for cid, name, area, geom in feats:
        assert name == names[cid]
        assert geom.IsValid()
        assert area == pytest.approx(geom.GetArea())
        per_class[cid] = per_class.get(cid, 0.0) + area
    # polygons cover exactly the classified pixels (0.25 m^2 each)
    for cid, px in res.class_pixels.items():
        assert per_class.get(cid, 0.0) == pytest.approx(px * 0.25)
        assert res.class_areas[cid] == pytest.approx(px * 0.25)
    # the specks are there without sieving
    assert min(a for _, _, a, _ in feats) == pytest.approx(0.25)


@pytest.mark.parametrize("unit,value", [("pixels", 5), ("map", 1.25)])
def test_sieve_removes_small_regions(tmp_path, unit, value):
    img = _blocks()
    src = write_geotiff(tmp_path / "in.tif", img, pixel=0.5)
    model, card = modulo_model(K, patch_size=32)
    segment(SegmentOptions(str(src), str(tmp_path / "o.tif"), vector=str(tmp_path / "o.gpkg"),
                           min_area=value, min_area_unit=unit, min_overlap=8, device="cpu"),
            model=model, card=card)
    feats, _, _ = _features(tmp_path / "o.gpkg")
    assert min(a for _, _, a, _ in feats) >= 5 * 0.25
    # the raster keeps its specks unless asked to sieve it too
    out = gdal.Open(str(tmp_path / "o.tif")).ReadAsArray()
    np.testing.assert_array_equal(out, img[0] % K)
    assert not list(tmp_path.glob("*.part*"))


def test_sieve_raster_and_nodata_skipped(tmp_path):
    img = _blocks()
    img[:, :16, :] = 255                                    # nodata strip on top
    src = write_geotiff(tmp_path / "in.tif", img, nodata=255, epsg=None)
    model, card = modulo_model(K, patch_size=32)
    res = segment(SegmentOptions(str(src), str(tmp_path / "o.tif"), vector=str(tmp_path / "o.gpkg"),
                                 min_area=5, min_area_unit="pixels", sieve_raster=True,
                                 min_overlap=8, device="cpu"),
                  model=model, card=card)
    out = gdal.Open(str(tmp_path / "o.tif")).ReadAsArray()
    assert (out[:16] == NODATA).all()
    expect = img[0] % K
    assert out[41, 41] == expect[39, 39] and out[70, 90] == expect[70, 89]   # specks gone
    assert (out[16:] != NODATA).all()
    feats, _, srs = _features(tmp_path / "o.gpkg")
    assert srs is None or srs.GetName().startswith("Undefined")   # GPKG's srs_id 0
    assert all(cid != NODATA for cid, *_ in feats)
    # without CRS, areas are in pixels; they sum to the valid pixels and match the result
    assert sum(a for _, _, a, _ in feats) == pytest.approx((out != NODATA).sum())
    assert sum(res.class_pixels.values()) == (out != NODATA).sum()
    assert res.class_pixels[int(expect[40, 40])] == (out == expect[40, 40]).sum()


def test_command_line_segment(tmp_path, capsys):
    """`python -m model_core segment` with a checkpoint, extent and polygons."""
    import torch

    from model_core.checkpoint import ClassInfo, ModelCard, save_checkpoint
    from model_core.config import FCtLConfig
    from model_core.models import FCtL

    cfg = FCtLConfig(backbone="mobilenetv3_small_050", num_classes=3, patch_size=64,
                     decoder_channels=16)
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "m.safetensors", FCtL(cfg),
                           ModelCard(cfg, [ClassInfo(i, f"c{i}", (80 * i, 0, 0))
                                           for i in range(3)]))
    img = np.random.default_rng(2).integers(0, 256, (3, 150, 130)).astype(np.uint8)
    src = write_geotiff(tmp_path / "in.tif", img, origin=(0.0, 150.0), pixel=1.0)
    cmd = [sys.executable, "-m", "model_core", "segment", str(src), str(tmp_path / "o.tif"),
           "--model", str(ckpt), "--device", "cpu", "--batch-size", "2", "--min-overlap", "16",
           "--extent", "10,20,100,120", "--vector", str(tmp_path / "o.gpkg")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "o.tif: 90 x 100 px" in proc.stdout
    ds = gdal.Open(str(tmp_path / "o.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (90, 100)
    assert ds.GetGeoTransform() == pytest.approx((10.0, 1.0, 0.0, 120.0, 0.0, -1.0))
    assert (tmp_path / "o.gpkg").is_file()

    from model_core.cli import main

    assert main(["segment", str(src), str(src), "--model", str(ckpt)]) == 2
    assert "is the input" in capsys.readouterr().err
