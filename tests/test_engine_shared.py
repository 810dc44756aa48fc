"""Shared context features (``shared_context``): each medium context is sampled from a map of
the downsampled raster encoded once, in tiles. With a model whose 'features' are the image
itself (stride 1), the sampled crop must be the per-patch medium window wherever the window
starts on the map's pixel grid, and a bilinear blend of its neighbours elsewhere; extents,
column groups and TTA must not change the result; a real FCtL must agree closely."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_geotiff
from osgeo import gdal

from model_core.geometry import Window, patch_starts
from model_core.inference import SegmentOptions, segment
from model_core.inference.context_map import SharedContextLayout
from model_core.inference.predict import TRANSFORMS, apply_image
from model_core.inference.testing import modulo_model

K = 7
P = 30


def _read(path) -> np.ndarray:
    ds = gdal.Open(str(path))   # keep the dataset alive while its band is read
    return ds.GetRasterBand(1).ReadAsArray()


def _smooth(h: int, w: int) -> np.ndarray:
    """Smooth RGB structure: bilinear interpolation of it is close to area averaging."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    bands = [127 + 100 * np.sin(x / (17 + 5 * b)) * np.cos(y / (23 - 4 * b)) for b in range(3)]
    return np.clip(np.stack(bands), 0, 255).astype(np.uint8)


def _run(tmp_path, src, name, shared, record=True, blur=False, **kw):
    model, card = modulo_model(K, patch_size=P, record=record, medium_context="x3",
                               large_context="global")
    if blur:
        # 'features' that see 4 px around them, past the 2-cell tile halo: they change when
        # a tile is cut differently, as real encoder features would
        model.encode_context = lambda img: torch.nn.functional.avg_pool2d(img, 9, 1, 4)
    opts = dict(batch_size=3, min_overlap=6, device="cpu", shared_context=shared)
    opts.update(kw)
    res = segment(SegmentOptions(str(src), str(tmp_path / f"{name}.tif"), **opts),
                  model=model, card=card)
    return model, res


def _mediums(model, key: str) -> torch.Tensor:
    parts = [c["cached"][key] if key in c["cached"] else c[key] for c in model.calls]
    return torch.cat(parts)


def test_shared_medium_features_are_the_medium_windows(tmp_path):
    """Windows starting on the map's grid (multiples of lambda = 3 from the anchor) get exactly
    the per-patch medium image (an area average over 3 x 3 pixels, padded past the border),
    the others a bilinear blend, on smooth ground within a grey level or two; labels unchanged."""
    h, w = 100, 139
    img = _smooth(h, w)
    src = write_geotiff(tmp_path / "in.tif", img)
    exact, r_exact = _run(tmp_path, src, "exact", False)
    shared, r_shared = _run(tmp_path, src, "shared", True)
    np.testing.assert_array_equal(_read(tmp_path / "exact.tif"), _read(tmp_path / "shared.tif"))
    assert r_exact.patches == r_shared.patches
    a, b = _mediums(exact, "medium"), _mediums(shared, "medium")
    assert a.shape == b.shape == (r_exact.patches, 3, P, P)
    # the whole raster's first patch anchors the map: its window starts at -P
    starts = [(x, y) for y in patch_starts(h, P, 6) for x in patch_starts(w, P, 6)]
    aligned = [i for i, (x, y) in enumerate(starts) if x % 3 == 0 and y % 3 == 0]
    other = [i for i in range(len(starts)) if i not in aligned]
    assert aligned and other
    torch.testing.assert_close(b[aligned], a[aligned], atol=1e-6, rtol=0)
    diff = (b[other] - a[other]).abs()
    # Off the raster's edge (where the blend mixes in the black padding) on smooth ground,
    # interpolating the 3x3 averages is within a grey level or two of averaging shifted pixels.
    ground = -torch.nn.functional.max_pool2d(-(a[other] > 0).float().amin(1, keepdim=True), 5,
                                             stride=1, padding=2)
    inner = diff[ground.expand_as(diff) > 0]
    assert inner.numel() > diff.numel() / 4
    assert inner.mean() < 1.5 / 255 and inner.max() < 6 / 255
    assert diff.max() > 0   # not aligned: really interpolated
    # the large context is still the global one, encoded once: not shared
    assert all("large" in c["cached"] for c in shared.calls)


def test_shared_tiles_across_column_groups_extents_and_tta(tmp_path):
    """The map is anchored on the whole raster: an extent run is the crop of the full run and
    column groups (tiles dropped and read again) change nothing; under TTA the features handed
    over are the transformed features of the same map."""
    h, w = 64, 400
    img = _smooth(h, w)
    src = write_geotiff(tmp_path / "in.tif", img)
    full, _ = _run(tmp_path, src, "full", True, blur=True)
    groups, res = _run(tmp_path, src, "groups", True, memory_mb=0.03, blur=True)
    assert res.patches > _mediums(full, "medium").shape[0]   # groups re-ran boundary columns
    by_window = {}
    for call in full.calls:
        for i in range(call["local"].shape[0]):
            by_window[call["local"][i].numpy().tobytes()] = call["cached"]["medium"][i]
    for call in groups.calls:
        for i in range(call["local"].shape[0]):
            torch.testing.assert_close(call["cached"]["medium"][i],
                                       by_window[call["local"][i].numpy().tobytes()])
    ext, _ = _run(tmp_path, src, "ext", True, window=(150, 10, 120, 40), blur=True)
    for call in ext.calls:
        for i in range(call["local"].shape[0]):
            torch.testing.assert_close(call["cached"]["medium"][i],
                                       by_window[call["local"][i].numpy().tobytes()])
    plain, _ = _run(tmp_path, src, "plain", True, batch_size=64)
    tta, _ = _run(tmp_path, src, "tta", True, tta=True, batch_size=64)
    assert len(tta.calls) == len(TRANSFORMS)
    for call, t in zip(tta.calls, TRANSFORMS):
        torch.testing.assert_close(call["cached"]["medium"],
                                   apply_image(plain.calls[0]["cached"]["medium"], t))
    np.testing.assert_array_equal(_read(tmp_path / "tta.tif"), img[0] % K)


def test_layout_reads_each_tile_once_and_drops_finished_rows():
    reads = []

    def read(win, out_w, out_h):
        reads.append((win, out_w, out_h))
        return np.zeros((3, out_h, out_w), np.float32)

    p, stride = 32, 4
    xs = ys = patch_starts(900, p, 8)
    windows = [Window(x - p, y - p, 3 * p, 3 * p) for y in ys for x in xs]
    layout = SharedContextLayout(windows, p, stride, (8, 8), read, tile_px=64, halo=2)
    assert layout.tile == 64 // stride - 4
    held: set = set()
    for row in range(len(ys)):
        batch = windows[row * len(xs):(row + 1) * len(xs)]
        load = layout.load(batch)
        held.difference_update(load.evict)
        assert not held & set(load.images)
        held |= set(load.images)
        assert min(k[0] for k in held) >= int(load.starts[:, 0].min()) // layout.tile
    assert len(reads) == len({(r[0].x, r[0].y) for r in reads})   # no tile read twice
    win, ow, oh = reads[0]
    assert (ow, oh) == (64, 64) and (win.w, win.h) == (192, 192)
    assert (win.x, win.y) == (-p - 2 * stride * 3, -p - 2 * stride * 3)


def test_shared_context_needs_a_context_stride(tmp_path):
    img = _smooth(40, 40)
    src = write_geotiff(tmp_path / "in.tif", img)
    model, card = modulo_model(K, patch_size=P, medium_context="x3")
    model.context_stride = None
    with pytest.raises(ValueError, match="context_stride"):
        segment(SegmentOptions(str(src), str(tmp_path / "o.tif"), min_overlap=6, device="cpu",
                               shared_context=True), model=model, card=card)
    assert not list(tmp_path.glob("o.tif*"))


def test_real_fctl_shared_context_agrees_with_per_patch_contexts(tmp_path):
    """A random FCtL (tiny backbone): the shared map gives nearly the same labels."""
    from model_core.checkpoint import ClassInfo, ModelCard
    from model_core.config import FCtLConfig
    from model_core.models import FCtL

    torch.manual_seed(0)
    cfg = FCtLConfig(backbone="mobilenetv3_small_050", patch_size=128, num_classes=4,
                     medium_context="x3", large_context="global", decoder_channels=32)
    model = FCtL(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.lcf.proj.weight, std=0.1)   # let LCF matter at all
    card = ModelCard(cfg, [ClassInfo(i, f"c{i}", (60 * i, 40, 200 - 40 * i)) for i in range(4)])
    src = write_geotiff(tmp_path / "in.tif", _smooth(500, 620))
    out = {}
    for shared in (False, True):
        segment(SegmentOptions(str(src), str(tmp_path / f"{shared}.tif"), device="cpu",
                               batch_size=2, shared_context=shared), model=model, card=card)
        out[shared] = _read(tmp_path / f"{shared}.tif")
    agreement = (out[False] == out[True]).mean()
    assert 0.9 < agreement


@pytest.mark.parametrize("medium", ["x3", "100"])   # lambda 3, and 100 / 30 = 3.33
@pytest.mark.parametrize("size", [(97, 64), (20, 13)])
def test_shared_context_small_rasters_fractional_lambda_and_nodata(tmp_path, medium, size):
    """Rasters smaller than a patch, a context that is not a whole multiple of the patch, and
    nodata patches (not run, their tiles still read): exact labels, near per-patch features."""
    w, h = size
    img = _smooth(h, w)
    img[:, :, : w // 3] = 0
    src = write_geotiff(tmp_path / "in.tif", img, nodata=0)
    feats = {}
    for shared in (False, True):
        model, card = modulo_model(K, patch_size=P, record=True, medium_context=medium)
        segment(SegmentOptions(str(src), str(tmp_path / f"{shared}.tif"), batch_size=2,
                               min_overlap=6, device="cpu", shared_context=shared),
                model=model, card=card)
        out = _read(tmp_path / f"{shared}.tif")
        expect = np.where(img[0] == 0, 255, img[0] % K)
        np.testing.assert_array_equal(out, expect)
        feats[shared] = _mediums(model, "medium")
    a, b = feats[False], feats[True]
    assert a.shape == b.shape
    assert (b - a).abs().mean() < 6 / 255
