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
