"""Fast context reads give the network exactly the values of the GDAL and numpy paths they replace.

Medium contexts and shared-context tiles are windows read to 1/lambda of their size: inside the
raster by integral block means (:mod:`model_core.inference.decimate`) instead of GDAL's averaging
read, across the border by building only the output blocks that touch the raster. Both are
checked bit for bit against the slow paths on real GeoTIFFs.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_geotiff
from osgeo import gdal

from model_core.geometry import Window
from model_core.inference.decimate import BoxDecimation, box_average
from model_core.inference.patches import PatchSource, _area_resize
from model_core.inference.reader import GdalReader


def _gdal_average(path, x, y, w, h, out_w, out_h) -> np.ndarray:
    ds = gdal.Open(str(path))
    return ds.ReadAsArray(x, y, w, h, buf_xsize=out_w, buf_ysize=out_h,
                          buf_type=gdal.GDT_Float32, resample_alg=gdal.GRIORA_Average)


@pytest.mark.parametrize("dtype,lo,hi", [(np.uint8, 0, 256), (np.uint16, 0, 65536),
                                         (np.int16, -3000, 3000)])
@pytest.mark.parametrize("fy,fx", [(2, 2), (3, 3), (4, 4), (2, 3), (1, 5)])
def test_box_average_equals_gdal_averaging_read(tmp_path, dtype, lo, hi, fy, fx):
    """Even factors make ties (x.5 means): GDAL rounds them away from zero, so must we."""
    rng = np.random.default_rng(fy * 10 + fx)
    a = rng.integers(lo, hi, (2, 120, 120)).astype(dtype)
    path = write_geotiff(tmp_path / "r.tif", a)
    x, y, w, h = 3, 7, 20 * fx, 24 * fy
    got = box_average(a[:, y:y + h, x:x + w], fy, fx)
    ref = _gdal_average(path, x, y, w, h, w // fx, h // fy)
    np.testing.assert_array_equal(got, ref)


def test_box_average_rejects_bad_input():
    with pytest.raises(TypeError, match="integer"):
        box_average(np.zeros((1, 4, 4), np.float32), 2, 2)
    with pytest.raises(ValueError, match="does not split"):
        box_average(np.zeros((1, 5, 4), np.uint8), 2, 2)


def test_reader_takes_the_fast_path_only_where_gdal_averages_full_pixels(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 300, 300)).astype(np.uint8)
    plain = GdalReader(str(write_geotiff(tmp_path / "plain.tif", a)))
    assert plain._boxes.factors(150, 150, 50, 50) == (3, 3)
    assert plain._boxes.factors(150, 150, 60, 60) is None    # not integral: GDAL
    assert plain._boxes.factors(150, 150, 150, 150) is None  # no decimation
    nodata = GdalReader(str(write_geotiff(tmp_path / "nodata.tif", a, nodata=0)))
    floats = GdalReader(str(write_geotiff(tmp_path / "f.tif", a.astype(np.float32))))
    assert not nodata._boxes.usable and not floats._boxes.usable
    ovr = tmp_path / "ovr.tif"
    write_geotiff(ovr, a)
    ds = gdal.Open(str(ovr), gdal.GA_Update)
    ds.BuildOverviews("AVERAGE", [2])
    ds = None
    assert not GdalReader(str(ovr))._boxes.usable   # GDAL would read the overview instead


def test_reader_fast_reads_equal_gdal_reads(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (3, 400, 400)).astype(np.uint8)
    path = write_geotiff(tmp_path / "r.tif", a)
    fast, slow = GdalReader(str(path)), GdalReader(str(path))
    slow._boxes.usable = False
    for x, y, w, h, ow, oh in [(0, 0, 300, 300, 100, 100), (17, 5, 240, 120, 80, 40),
                               (100, 250, 150, 150, 50, 50), (1, 1, 398, 398, 199, 199)]:
        np.testing.assert_array_equal(fast.read(x, y, w, h, [3, 1], ow, oh),
                                      slow.read(x, y, w, h, [3, 1], ow, oh))


def test_reader_falls_back_to_gdal_when_its_first_check_fails(tmp_path, monkeypatch):
    """Another GDAL version might round differently: the first fast read is compared with
    GDAL's, and a mismatch sends this reader to GDAL for good."""
    import model_core.inference.decimate as decimate

    a = np.random.default_rng(2).integers(0, 256, (1, 90, 90)).astype(np.uint8)
    path = write_geotiff(tmp_path / "r.tif", a)
    ref = _gdal_average(path, 0, 0, 90, 90, 30, 30)[None]
    original = decimate.box_average
    monkeypatch.setattr(decimate, "box_average", lambda x, fy, fx: original(x, fy, fx) + 1)
    reader = GdalReader(str(path))
    np.testing.assert_array_equal(reader.read(0, 0, 90, 90, [1], 30, 30), ref)
    assert not reader._boxes.usable
    np.testing.assert_array_equal(reader.read(0, 0, 90, 90, [1], 30, 30), ref)


@pytest.mark.parametrize("fy,fx", [(3, 3), (2, 2), (4, 1), (1, 3), (5, 2)])
def test_area_resize_is_numpy_mean_bit_for_bit(fy, fx):
    x = np.random.default_rng(fy * fx).random((3, 24 * fy, 30 * fx), dtype=np.float32)
    ref = x.reshape(3, 24, fy, 30, fx).mean(axis=(2, 4), dtype=np.float32)
    np.testing.assert_array_equal(_area_resize(x, 30, 24), ref)


def _padded_reference(source: PatchSource, a: np.ndarray, win: Window, out: int) -> np.ndarray:
    """The slow path: pad the window with 0 at full resolution, scale, then block means."""
    x0, y0, ww, wh = int(win.x), int(win.y), int(win.w), int(win.h)
    h, w = a.shape[1:]
    full = np.zeros((a.shape[0], wh, ww), np.float32)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + ww, w), min(y0 + wh, h)
    raw = a[:, iy0:iy1, ix0:ix1].astype(np.float32)
    full[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = source._scaled(raw)[0]
    f = ww // out
    return full.reshape(a.shape[0], out, f, out, f).mean(axis=(2, 4), dtype=np.float32)


@pytest.mark.parametrize("x,y", [(-60, -60), (-1, 40), (130, 170), (-100, 100), (150, -7)])
def test_border_crossing_context_equals_full_padding(tmp_path, x, y):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (3, 256, 256)).astype(np.uint8)
    reader = GdalReader(str(write_geotiff(tmp_path / "r.tif", a)))
    source = PatchSource(reader, [1, 2, 3], (10.0, 240.0), 40, {"medium": "x3"})
    win = Window(float(x), float(y), 120.0, 120.0)
    got = source.read_context(win, 40, 40)
    np.testing.assert_array_equal(got, _padded_reference(source, a, win, 40))
    # unresized (lambda = 1): values and validity of the padded window
    vals, ok = source.image(Window(float(x), float(y), 64.0, 64.0), 64, 64)
    inside = np.zeros((64, 64), bool)
    inside[max(-y, 0):max(0, min(64, 256 - y)), max(-x, 0):max(0, min(64, 256 - x))] = True
    np.testing.assert_array_equal(ok, inside)
    assert (vals[:, ~inside] == 0).all()


def test_border_crossing_window_over_the_padding_limit_is_read_decimated(tmp_path, monkeypatch):
    """Memory stays bounded: a border-crossing window above MAX_PADDED_PIXELS is never read at
    full resolution, even with an integral factor."""
    import model_core.inference.patches as patches

    a = np.random.default_rng(4).integers(0, 256, (3, 256, 256)).astype(np.uint8)
    reader = GdalReader(str(write_geotiff(tmp_path / "r.tif", a)))
    reads = []
    original = reader.read
    monkeypatch.setattr(reader, "read", lambda *args, **kw: reads.append(kw) or
                        original(*args, **kw))
    monkeypatch.setattr(patches, "MAX_PADDED_PIXELS", 100 * 100)
    source = PatchSource(reader, [1, 2, 3], (0.0, 255.0), 40, {"medium": "x3"})
    out = source.read_context(Window(-60.0, -60.0, 120.0, 120.0), 40, 40)
    assert reads and all(kw.get("out_w") for kw in reads)   # decimated, not full resolution
    assert (out[:, :20, :] == 0).all() and (out[:, 20:, 20:] > 0).any()


def test_native_reads_equal_float_reads(tmp_path):
    """read_native gives the raw integers (their type kept for 8 and 16 bits) that read gives
    as float32; other types come back as read gives them."""
    rng = np.random.default_rng(5)
    for dtype, expect in [(np.uint8, np.uint8), (np.int16, np.int16), (np.uint16, np.uint16),
                          (np.int32, np.float32), (np.float32, np.float32)]:
        a = rng.integers(-300 if dtype in (np.int16, np.int32) else 0, 250,
                         (3, 60, 70)).astype(dtype)
        reader = GdalReader(str(write_geotiff(tmp_path / f"{np.dtype(dtype).name}.tif", a)))
        got = reader.read_native(5, 7, 40, 30, [3, 1])
        assert got.dtype == expect
        np.testing.assert_array_equal(got.astype(np.float32), reader.read(5, 7, 40, 30, [3, 1]))
        np.testing.assert_array_equal(got, a[[2, 0], 7:37, 5:45].astype(expect))


@pytest.mark.parametrize("dtype,scale,exact", [(np.uint8, (0.0, 255.0), True),
                                               (np.uint8, (-20.0, 300.0), True),
                                               (np.uint8, (10.0, 240.0), False),
                                               (np.uint16, (0.0, 65535.0), True),
                                               (np.int16, (-40000.0, 40000.0), True),
                                               (np.int16, (0.0, 3000.0), False)])
def test_integer_scaling_equals_the_float_path_bit_for_bit(tmp_path, dtype, scale, exact):
    """Native integer reads are scaled without the clipping passes only where nothing can
    clip: the values are those of the float32 path, bit for bit."""
    info = np.iinfo(dtype)
    a = np.random.default_rng(6).integers(info.min, int(info.max) + 1, (3, 50, 50)).astype(dtype)
    reader = GdalReader(str(write_geotiff(tmp_path / "r.tif", a)))
    source = PatchSource(reader, [1, 2, 3], scale, 50, {})
    assert source._exact_sums(np.dtype(dtype)) == exact
    vals, ok = source._scaled(a)
    ref, ref_ok = source._scaled(a.astype(np.float32))
    np.testing.assert_array_equal(vals, ref)
    np.testing.assert_array_equal(ok, ref_ok)
    assert vals.min() >= 0.0 and vals.max() <= 1.0


@pytest.mark.parametrize("dtype,scale", [(np.uint8, (0.0, 255.0)), (np.uint8, (-20.0, 300.0)),
                                         (np.uint16, (0.0, 65535.0)),
                                         (np.int16, (-40000.0, 40000.0))])
@pytest.mark.parametrize("x,y", [(-60, -60), (-1, 40), (130, 170), (150, -7)])
def test_border_crossing_context_from_integer_sums(tmp_path, dtype, scale, x, y):
    """Integer rasters that cannot clip and have no nodata: border-crossing contexts are block
    means of exact integer sums, within float32 rounding of the padded float32 path (the labels
    change at ties at most)."""
    info = np.iinfo(dtype)
    a = np.random.default_rng(7).integers(info.min, int(info.max) + 1,
                                          (3, 256, 256)).astype(dtype)
    reader = GdalReader(str(write_geotiff(tmp_path / "r.tif", a)))
    source = PatchSource(reader, [1, 2, 3], scale, 40, {"medium": "x3"})
    assert source._exact_sums(np.dtype(dtype))
    win = Window(float(x), float(y), 120.0, 120.0)
    got = source.read_context(win, 40, 40)
    ref = _padded_reference(source, a, win, 40)
    # the slow path rounds 9 values, 8 sums and a division: a few ulps (3 at most measured)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    outside = ref == 0
    assert (got[outside] == 0).all() and not outside.all()


@pytest.mark.parametrize("method,used", [("NEAREST", False), ("CUBIC", False), ("AVERAGE", True)])
def test_contexts_use_overviews_only_when_they_hold_area_means(tmp_path, method, used):
    """One context resampler: decimated reads are area means, as in training. GDAL records no
    resampling method, so each overview level is checked on a sample; others are not read."""
    from model_core.resample import area_average

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 600, 600)).astype(np.uint8)
    path = tmp_path / f"{method}.tif"
    write_geotiff(path, a)
    ds = gdal.Open(str(path), gdal.GA_Update)
    ds.BuildOverviews(method, [3])
    ds = None
    before = path.read_bytes()
    r = GdalReader(str(path))
    assert r.overviews is used
    ctx = r.read(0, 0, 600, 600, [1, 2, 3], 200, 200)
    exact = area_average(a, 200, 200)
    assert np.mean(np.abs(ctx - exact) <= 1) > 0.99
    assert r.reopen().overviews is used
    r.close()
    assert path.read_bytes() == before     # the input is never modified
