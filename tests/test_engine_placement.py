"""Placement and contexts: with a model whose prediction is a known function of each pixel, the
engine's output must equal the expected label image exactly (borders, seams, TTA), and the
contexts it hands to the model must be the right windows of the raster (per-patch contexts,
``shared_context=False``; the shared default: test_engine_shared.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_geotiff
from osgeo import gdal

from model_core.geometry import Window, patch_starts
from model_core.inference import SegmentOptions, segment
from model_core.inference.predict import TRANSFORMS, apply_box, apply_image
from model_core.inference.testing import modulo_model

K = 7


def _read(path) -> np.ndarray:
    ds = gdal.Open(str(path))
    return ds.GetRasterBand(1).ReadAsArray()


def _random(shape, seed=0, dtype=np.uint8, hi=256) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hi, shape).astype(dtype)


@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("size", [(170, 150), (97, 64), (20, 13)])
def test_labels_exact_everywhere(tmp_path, size, tta):
    """Every pixel, at borders and patch seams, under TTA, for a raster smaller than a patch."""
    w, h = size
    img = _random((3, h, w), seed=w)
    src = write_geotiff(tmp_path / "in.tif", img)
    model, card = modulo_model(K, patch_size=32)
    res = segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), batch_size=3, tta=tta,
                                 min_overlap=8, device="cpu"), model=model, card=card)
    out = _read(tmp_path / "out.tif")
    np.testing.assert_array_equal(out, img[0] % K)
    assert (res.width, res.height) == (w, h)
    assert res.grid == (len(patch_starts(w, 32, 8)), len(patch_starts(h, 32, 8)))
    expect = np.bincount((img[0] % K).ravel(), minlength=K)
    assert [res.class_pixels[i] for i in range(K)] == expect.tolist()


def test_each_patch_and_its_contexts_are_the_right_windows(tmp_path):
    """Local patch = raster window; medium (x3) = centred 3P window, black-padded past the
    border, box-averaged to P; global = whole raster to P, encoded once; boxes consistent."""
    p, w, h = 32, 128, 96
    img = _random((3, h, w), seed=3)
    src = write_geotiff(tmp_path / "in.tif", img)
    model, card = modulo_model(K, patch_size=p, record=True, medium_context="x3",
                               large_context="global")
    segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), batch_size=4, min_overlap=8,
                           device="cpu", shared_context=False), model=model, card=card)
    xs, ys = patch_starts(w, p, 8), patch_starts(h, p, 8)
    order = [(x, y) for y in ys for x in xs]
    locals_ = torch.cat([c["local"] for c in model.calls]).numpy()
    mediums = torch.cat([c["medium"] for c in model.calls]).numpy()
    mboxes = torch.cat([c["boxes"]["medium"] for c in model.calls]).numpy()
    lboxes = torch.cat([c["boxes"]["large"] for c in model.calls]).numpy()
    assert len(locals_) == len(order)
    padded = np.zeros((3, h + 2 * p, w + 2 * p), np.float64)
    padded[:, p:p + h, p:p + w] = img / 255.0
    for i, (x, y) in enumerate(order):
        np.testing.assert_allclose(locals_[i], img[:, y:y + p, x:x + p] / 255.0, atol=1e-6)
        # medium window [x - p, x + 2p) in raster pixels = [x, x + 3p) in the padded image
        win = padded[:, y:y + 3 * p, x:x + 3 * p]
        expect = win.reshape(3, p, 3, p, 3).mean(axis=(2, 4))
        # GDAL averages uint8 data to whole values inside the raster: half a grey level
        np.testing.assert_allclose(mediums[i], expect, atol=0.5 / 255 + 1e-6)
        np.testing.assert_allclose(mboxes[i], [1 / 3, 1 / 3, 2 / 3, 2 / 3], atol=1e-6)
        np.testing.assert_allclose(lboxes[i], [x / w, y / h, (x + p) / w, (y + p) / h],
                                   atol=1e-6)
    # the global context: read once, encoded once, handed to every batch
    assert len(model.encoded) == 1
    gexp = (img.astype(np.float64) / 255.0).reshape(3, p, h // p, p, w // p).mean(axis=(2, 4))
    np.testing.assert_allclose(model.encoded[0][0].numpy(), gexp, atol=0.5 / 255 + 1e-6)
    for call in model.calls:
        cached = call["cached"]["large"]
        assert cached.shape[0] == call["local"].shape[0]
        np.testing.assert_array_equal(cached[0].numpy(), model.encoded[0][0].numpy())


def test_tiny_raster_global_context_is_padded_to_a_patch(tmp_path):
    p, w, h = 32, 20, 12
    img = _random((3, h, w), seed=5)
    src = write_geotiff(tmp_path / "in.tif", img)
    model, card = modulo_model(K, patch_size=p, record=True)
    segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), min_overlap=8, device="cpu",
                           shared_context=False), model=model, card=card)
    call = model.calls[0]
    expect = np.zeros((3, p, p))
    expect[:, :h, :w] = img / 255.0
    np.testing.assert_allclose(call["local"][0].numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(model.encoded[0][0].numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(call["boxes"]["large"][0].numpy(), [0, 0, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(_read(tmp_path / "out.tif"), img[0] % K)


def test_extent_run_equals_the_crop_of_the_full_run(tmp_path):
    img = _random((3, 120, 150), seed=9)
    src = write_geotiff(tmp_path / "in.tif", img, origin=(1000.0, 2000.0), pixel=2.0)
    model, card = modulo_model(K, patch_size=32, medium_context="x2")
    segment(SegmentOptions(str(src), str(tmp_path / "full.tif"), min_overlap=8, device="cpu"),
            model=model, card=card)
    # pixels 37..101 x 21..75: map x 1074..1202, y 2000-2*75..2000-2*21
    res = segment(SegmentOptions(str(src), str(tmp_path / "ext.tif"), min_overlap=8,
                                 extent=(1074.0, 1850.0, 1202.0, 1958.0), device="cpu"),
                  model=model, card=card)
    full, ext = _read(tmp_path / "full.tif"), _read(tmp_path / "ext.tif")
    assert ext.shape == (54, 64)
    np.testing.assert_array_equal(ext, full[21:75, 37:101])
    assert res.window == (37, 21, 64, 54)
    gt = gdal.Open(str(tmp_path / "ext.tif")).GetGeoTransform()
    assert gt == pytest.approx((1074.0, 2.0, 0.0, 1958.0, 0.0, -2.0))


def test_tta_box_transform_matches_image_transform():
    """A marked rectangle at a box lands at the transformed box after the image transform."""
    n = 60
    box = torch.tensor([[0.1, 0.2, 0.45, 0.8]])
    img = torch.zeros(1, 1, n, n)
    x0, y0, x1, y1 = (box[0] * n).round().long().tolist()
    img[..., y0:y1, x0:x1] = 1
    for t in TRANSFORMS:
        out = apply_image(img, t)[0, 0]
        ys, xs = torch.nonzero(out, as_tuple=True)
        got = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / n
        torch.testing.assert_close(got, apply_box(box, t)[0], atol=1e-6, rtol=0)


def test_tta_hands_the_model_transformed_contexts_and_boxes(tmp_path):
    """Under TTA the medium context is transformed with its patch, and its box stays centred;
    the global context is encoded once per transform and the global box moves with it."""
    p = 32
    img = _random((3, 64, 80), seed=11)
    src = write_geotiff(tmp_path / "in.tif", img)
    model, card = modulo_model(K, patch_size=p, record=True)
    segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), batch_size=64, tta=True,
                           min_overlap=8, device="cpu", shared_context=False),
            model=model, card=card)
    assert len(model.calls) == 8 and len(model.encoded) == 8
    ref = model.calls[0]
    for t, call in zip(TRANSFORMS, model.calls):
        torch.testing.assert_close(call["local"], apply_image(ref["local"], t))
        torch.testing.assert_close(call["medium"], apply_image(ref["medium"], t))
        torch.testing.assert_close(call["boxes"]["large"], apply_box(ref["boxes"]["large"], t))
        torch.testing.assert_close(call["cached"]["large"][0],
                                   apply_image(ref["cached"]["large"][0], t))
    np.testing.assert_array_equal(_read(tmp_path / "out.tif"), img[0] % K)


def test_window_and_geometry_helpers_agree():
    # the engine's patch windows are geometry's: 2448 px -> 6 patches, step 388, 120 px overlap
    xs = patch_starts(2448, 508, 50)
    assert xs == [0, 388, 776, 1164, 1552, 1940]
    assert Window(xs[1], 0, 508, 508).x - (xs[0] + 508) == -120


def test_global_context_ignores_overviews_that_are_not_area_means(tmp_path):
    """Overviews that do not hold area means (here filled with a marker value) are not used for
    contexts: the global context is the area mean of full resolution, as in training. A run never
    adds files (no .ovr/.aux.xml) next to its input."""
    p = 32
    img = _random((3, 256, 256), seed=13)
    src = write_geotiff(tmp_path / "in.tif", img)
    ds = gdal.Open(str(src), gdal.GA_Update)
    ds.BuildOverviews("AVERAGE", [2, 4, 8])
    for b in range(1, 4):
        for i in range(3):
            ds.GetRasterBand(b).GetOverview(i).Fill(200)
    ds = None
    before = sorted(p_.name for p_ in tmp_path.iterdir())
    stamp = src.stat().st_mtime_ns
    model, card = modulo_model(K, patch_size=p, record=True)
    segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), min_overlap=8, device="cpu",
                           shared_context=False), model=model, card=card)
    from model_core.resample import area_average

    want = area_average(img, p, p) / 255
    np.testing.assert_allclose(model.encoded[0].numpy()[0], want, atol=1e-6)
    np.testing.assert_array_equal(_read(tmp_path / "out.tif"), img[0] % K)   # full resolution
    after = sorted(p_.name for p_ in tmp_path.iterdir())
    assert [n for n in after if not n.startswith("out.tif")] == before
    assert src.stat().st_mtime_ns == stamp
