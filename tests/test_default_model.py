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
    assert float(model.lcf.proj.weight.abs().mean()) > 1e-3


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
