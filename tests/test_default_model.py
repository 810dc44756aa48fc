"""The shipped model is guarded: the bundled default model on the bundled sample raster gives the
labels stored when the model was bundled (fp32, so that every CPU computes the same; at least
99 % of pixels, for BLAS differences on ties), and its card says what it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from model_core.checkpoint import DEFAULT_MODEL, load_checkpoint, read_card
from model_core.inference import SegmentOptions, segment

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample" / "rotterdam_spacenet6_rgb.tif"
STORED = ROOT / "resources" / "models" / "default_sample_labels.tif"


def test_bundled_model_reproduces_its_stored_labels_on_the_sample(tmp_path):
    out = tmp_path / "classes.tif"
    res = segment(SegmentOptions(str(SAMPLE), str(out), device="cpu", precision="fp32"))
    got = gdal.Open(str(out)).ReadAsArray()
    want = gdal.Open(str(STORED)).ReadAsArray()
    assert got.shape == want.shape == (600, 600)
    agreement = float((got == want).mean())
    assert agreement >= 0.99, f"only {agreement:.2%} of the stored labels reproduced"
    assert len(np.unique(got)) >= 3          # not a constant map
    assert res.processing.startswith("native")   # the sample is at the model's 0.5 m


def test_bundled_model_card_and_live_context_fusion():
    card = read_card(DEFAULT_MODEL)
    assert card.gsd == pytest.approx(0.5) and card.config.lcf_output == "projection"
    assert card.config.uses_lcf and card.config.uses_ale
    model, _ = load_checkpoint(None)
    # LCF contributes: its zero-initialised projection has learnt weights
    assert float(model.lcf.proj.weight.detach().abs().mean()) > 1e-3


def test_same_ground_at_a_finer_pixel_size_gives_the_same_labels(tmp_path):
    """The sample taken as 0.25 m imagery and averaged to 0.5 m (what a coarser sensor records)
    is the same ground at two pixel sizes: by default the 0.25 m raster is read at the model's
    0.5 m and gives the 0.5 m raster's labels; at native resolution it does not."""
    src = gdal.Open(str(SAMPLE))
    fine = tmp_path / "fine_0.25m.tif"
    gt = list(src.GetGeoTransform())
    gt[1], gt[5] = 0.25, -0.25
    ds = gdal.Translate(str(fine), src)
    ds.SetGeoTransform(gt)
    ds = None
    coarse = tmp_path / "coarse_0.5m.tif"
    gdal.Warp(str(coarse), str(fine), xRes=0.5, yRes=0.5, resampleAlg="average")

    def labels(path, **kw):
        out = tmp_path / f"{path.stem}_{kw.get('pixel_size', 'auto')}.tif"
        segment(SegmentOptions(str(path), str(out), device="cpu", precision="fp32",
                               output_grid="processing", **kw))
        return gdal.Open(str(out)).ReadAsArray()

    ref = labels(coarse)
    auto = labels(fine)
    assert auto.shape == ref.shape == (300, 300)
    assert (auto == ref).mean() >= 0.95     # 97.8 % measured: averaging twice rounds twice
    native = labels(fine, pixel_size="native")[::2, ::2]
    assert (native == ref).mean() < 0.9     # the model shown a quarter of its ground


def same_ground_agreement(src: Path, tmp_path: Path, window: tuple[int, int, int, int] | None = None
                          ) -> dict[float, float]:
    """``src`` (or a pixel window of it) as 0.5 m imagery in UTM, resampled to 0.25 m (cubic)
    and 1 m (average, what a coarser sensor records), each segmented with the default options;
    the share of pixels agreeing with the 0.5 m run, compared on the 0.5 m grid."""
    base = tmp_path / "0.5.tif"
    ds = gdal.Translate(str(base), str(src), srcWin=window, outputSRS="EPSG:32631",
                        outputBounds=(500000, 5000000 + 0.5 * (window or (0, 0, 0, 600))[3],
                                      500000 + 0.5 * (window or (0, 0, 600, 0))[2], 5000000))
    w, h = ds.RasterXSize, ds.RasterYSize
    ds = None
    labels = {}
    for px in (0.25, 0.5, 1.0):
        path = base if px == 0.5 else tmp_path / f"{px}.tif"
        if px != 0.5:
            gdal.Warp(str(path), str(base), xRes=px, yRes=px,
                      resampleAlg="average" if px > 0.5 else "cubic")
        out = tmp_path / f"out_{px}.tif"
        segment(SegmentOptions(str(path), str(out), device="cpu", precision="fp32"))
        labels[px] = gdal.Warp("", str(out), format="MEM", width=w, height=h,
                               outputBounds=(500000, 5000000, 500000 + 0.5 * w,
                                             5000000 + 0.5 * h),
                               resampleAlg="near").ReadAsArray()
    return {px: float((labels[px] == labels[0.5]).mean()) for px in (0.25, 1.0)}


def test_same_ground_at_three_pixel_sizes_on_the_sample(tmp_path):
    """Issue 14's check on real imagery: the bundled model, trained with coarser-capture views,
    reads 0.25 m and 1 m versions of the sample at its 0.5 m and labels them as the 0.5 m
    original (measured 90.0 % and 77.1 %; the model before those views: 89.6 % and 52.9 %)."""
    got = same_ground_agreement(SAMPLE, tmp_path, (0, 0, 600, 600))
    assert got[0.25] >= 0.88 and got[1.0] >= 0.72, got


def test_same_ground_at_three_pixel_sizes_on_deepglobe(shared_data, tmp_path):
    """The hardest DeepGlobe test image (fine-grained rangeland and fields): measured 89.4 % at
    0.25 m and 72.1 % at 1 m (the model before the coarser views: 83.0 % and 41.2 %); 10452:
    92.6 % and 91.3 %, 794214: 98.5 % and 96.7 % (README). A guard against regressions: the
    issue's 90 % holds for 0.25 m on average and for 1 m on two of the three images."""
    got = same_ground_agreement(shared_data / "deepglobe" / "6399_sat.jpg", tmp_path,
                                (0, 0, 2448, 2448))
    assert got[0.25] >= 0.87 and got[1.0] >= 0.68, got
