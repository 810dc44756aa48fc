"""Real data ranges (issue 17): 16-bit and float rasters are stretched as QGIS shows them (2-98 %
cumulative count cut per band onto the model's range), NaN is nodata, and class rasters get
internal overviews. All on real GDAL files made here, through the engine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, write_geotiff
from osgeo import gdal

from model_core.checkpoint import load_checkpoint
from model_core.inference import SegmentOptions, segment
from model_core.inference.reader import GdalReader
from model_core.inference.stretch import (StretchedReader, percentile_cut, resolve_scaling,
                                          sample_windows, sampled_cut)
from model_core.inference.testing import modulo_model
from model_core.inference.writers import NODATA, add_overviews

SAMPLE = ROOT / "resources" / "sample" / "rotterdam_spacenet6_rgb.tif"
N = 300   # px: a crop of the bundled sample, enough for the default model's grid


@pytest.fixture(scope="module")
def default_model():
    return load_checkpoint(None, "cpu")


@pytest.fixture(scope="module")
def rgb8() -> np.ndarray:
    return gdal.Open(str(SAMPLE)).ReadAsArray()[:, :N, :N]


def _segment(model_card, src: Path, out: Path, **kw) -> np.ndarray:
    model, card = model_card
    segment(SegmentOptions(str(src), str(out), device="cpu", **kw), model=model, card=card)
    return gdal.Open(str(out)).ReadAsArray()


def _cuts(metadata: dict) -> dict[int, tuple[float, float]]:
    items = metadata["FCTL_INPUT_STRETCH_VALUES"].split(";")
    return {int(b): tuple(float(v) for v in r.split(",")) for b, r in (i.split(":") for i in items)}


def test_uint16_is_stretched_like_qgis_and_labels_match_8_bit(tmp_path, default_model, rgb8):
    # 16-bit data occupying 0..4000: clipped at 255 before, the image arrived nearly white
    u16 = np.round(rgb8.astype(np.float64) * (4000.0 / 255.0)).astype(np.uint16)
    assert u16.max() <= 4000 and u16.max() > 3000
    src16 = write_geotiff(tmp_path / "u16.tif", u16)
    labels16 = _segment(default_model, src16, tmp_path / "o16.tif")
    md = gdal.Open(str(tmp_path / "o16.tif")).GetMetadata()
    assert md["FCTL_INPUT_SCALING"] == "stretch"
    assert md["FCTL_INPUT_STRETCH"] == "cumulative count cut 2-98 %"
    cuts = _cuts(md)
    for b in (1, 2, 3):   # QGIS's cut: first values reaching 2 % and 98 % of the count
        expected = np.percentile(u16[b - 1], [2, 98], method="inverted_cdf")
        np.testing.assert_allclose(cuts[b], expected)
    # the same image scaled to 8 bit with the same cut (what QGIS shows, exported)
    lo = np.array([cuts[b][0] for b in (1, 2, 3)])[:, None, None]
    hi = np.array([cuts[b][1] for b in (1, 2, 3)])[:, None, None]
    eight = np.clip(np.round((u16 - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    labels8 = _segment(default_model, write_geotiff(tmp_path / "b8.tif", eight),
                       tmp_path / "o8.tif")
    agreement = float(np.mean(labels16 == labels8))
    print(f"16-bit stretched vs 8-bit export: {100 * agreement:.2f} % of pixels agree")
    assert agreement > 0.95
    assert not list(tmp_path.glob("u16.tif.*")), "the input gets no side file"


def test_explicit_scale_overrides_the_stretch(tmp_path, default_model, rgb8):
    u16 = (rgb8.astype(np.uint16) * 16)[:, :64, :64]
    src = write_geotiff(tmp_path / "u16.tif", u16)
    model, card = modulo_model(7, patch_size=32, value_range=4080.0)
    segment(SegmentOptions(str(src), str(tmp_path / "o.tif"), device="cpu", min_overlap=8,
                           scale=(0.0, 4080.0)), model=model, card=card)
    ds = gdal.Open(str(tmp_path / "o.tif"))
    assert ds.GetMetadata()["FCTL_INPUT_SCALING"] == "option"
    assert ds.GetMetadata()["FCTL_INPUT_SCALE"] == "0 4080"
    np.testing.assert_array_equal(ds.ReadAsArray(), u16[0] % 7)


def test_byte_raster_keeps_the_model_scale(tmp_path, rgb8):
    src = write_geotiff(tmp_path / "b.tif", rgb8[:, :64, :64])
    model, card = modulo_model(7, patch_size=32)
    segment(SegmentOptions(str(src), str(tmp_path / "o.tif"), device="cpu", min_overlap=8),
            model=model, card=card)
    ds = gdal.Open(str(tmp_path / "o.tif"))
    assert ds.GetMetadata()["FCTL_INPUT_SCALING"] == "model"
    np.testing.assert_array_equal(ds.ReadAsArray(), rgb8[0, :64, :64] % 7)


def test_stretch_maps_each_band_cut_onto_the_model_range(tmp_path):
    rng = np.random.default_rng(3)
    img = rng.integers(1000, 5001, (2, 50, 60)).astype(np.uint16)
    img[1] = img[1] // 10          # another range per band
    img[:, :5, :5] = 0             # nodata, left out of the cut
    src = write_geotiff(tmp_path / "s.tif", img, nodata=0)
    with GdalReader(str(src)) as reader:
        scaling = resolve_scaling(None, (0.0, 255.0), reader, [1, 2, 2])
        assert isinstance(scaling.reader, StretchedReader)
        for b in (1, 2):
            valid = img[b - 1][img[b - 1] != 0]
            assert scaling.cuts[b] == tuple(np.percentile(valid, [2, 98],
                                                          method="inverted_cdf"))
        out = scaling.reader.read(0, 0, 60, 50, [1, 2])
        assert np.isnan(out[:, :5, :5]).all()            # nodata -> NaN -> output nodata
        for i, b in enumerate((1, 2)):
            lo, hi = scaling.cuts[b]
            np.testing.assert_allclose(out[i, 10:, 10:],
                                       (img[b - 1, 10:, 10:] - lo) * 255.0 / (hi - lo),
                                       rtol=1e-5, atol=1e-3)
        # a model trained beyond 8 bits keeps its own range
        assert resolve_scaling(None, (0.0, 10000.0), reader, [1]).source == "model"
        with pytest.raises(ValueError, match="empty"):
            resolve_scaling((5.0, 5.0), (0.0, 255.0), reader, [1])


def test_float_nan_is_nodata_and_float_is_stretched(tmp_path, default_model, rgb8):
    img = rgb8.astype(np.float32) / 255.0 * 0.4     # reflectance-like 0..0.4
    img[:, 100:180, 120:200] = np.nan
    src = write_geotiff(tmp_path / "f.tif", img)
    labels = _segment(default_model, src, tmp_path / "o.tif")
    assert (labels[100:180, 120:200] == NODATA).all()
    outside = np.ones(labels.shape, bool)
    outside[100:180, 120:200] = False
    assert (labels[outside] != NODATA).all()
    md = gdal.Open(str(tmp_path / "o.tif")).GetMetadata()
    assert md["FCTL_INPUT_SCALING"] == "stretch"
    lo, hi = _cuts(md)[1]
    assert 0.0 <= lo < hi <= 0.4 + 1e-6


def test_large_rasters_sample_a_bounded_number_of_pixels(tmp_path):
    rng = np.random.default_rng(5)
    # 4 px cells: the averaged overviews hold the same values as the full resolution
    cells = rng.normal(2000, 300, (600, 600)).clip(0, 65535).astype(np.uint16)
    img = np.kron(cells, np.ones((4, 4), np.uint16))
    src = write_geotiff(tmp_path / "big.tif", img)
    exact = np.percentile(img, [2, 98], method="inverted_cdf")
    with GdalReader(str(src)) as reader:     # 5.8 Mpx, no overviews: blocks spread over it
        lo, hi = reader.cumulative_cut(1, 2.0, 98.0)
    assert abs(lo - exact[0]) < 15 and abs(hi - exact[1]) < 15
    ds = gdal.Open(str(src))
    ds.BuildOverviews("AVERAGE", [2, 4])
    ds = None
    with GdalReader(str(src)) as reader:     # the 1200 px overview is read whole
        lo2, hi2 = reader.cumulative_cut(1, 2.0, 98.0)
    assert (lo2, hi2) == tuple(exact)
    windows = sample_windows(100_000, 100_000, (256, 256), 4_000_000)
    assert sum(w * h for _, _, w, h in windows) <= 4_000_000
    assert len({x for x, _, _, _ in windows}) > 4 and len({y for _, y, _, _ in windows}) > 4


def test_sampled_cut_of_other_readers(tmp_path):
    img = np.arange(100 * 120, dtype=np.float32).reshape(1, 100, 120)
    src = write_geotiff(tmp_path / "a.tif", img)
    with GdalReader(str(src)) as reader:
        cut = sampled_cut(reader, 1, 2.0, 98.0)
    assert cut == tuple(np.percentile(img, [2, 98], method="inverted_cdf"))
    assert percentile_cut(np.array([7.0, 7.0]), 2, 98) == (7.0, 8.0)
    assert percentile_cut(np.array([], np.float32), 2, 98) is None


def test_class_raster_gets_mode_overviews(tmp_path, default_model, rgb8):
    labels = _segment(default_model, SAMPLE, tmp_path / "o.tif")      # 600 px > 512
    ds = gdal.Open(str(tmp_path / "o.tif"))
    band = ds.GetRasterBand(1)
    assert band.GetOverviewCount() > 0
    ids = set(np.unique(labels).tolist())
    for i in range(band.GetOverviewCount()):
        assert set(np.unique(band.GetOverview(i).ReadAsArray()).tolist()) <= ids
    assert ds.GetMetadata()["FCTL_INPUT_SCALING"] == "model"      # 8-bit sample
    small = write_geotiff(tmp_path / "small.tif", np.zeros((100, 100), np.uint8))
    assert add_overviews(small) == 0
    assert gdal.Open(str(small)).GetRasterBand(1).GetOverviewCount() == 0
    assert sorted(os.listdir(tmp_path)) == ["o.tif", "o.tif.aux.xml", "small.tif"]
