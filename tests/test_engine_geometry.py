"""Output geometry and input kinds: size, geotransform and CRS of the input (or of the processed
extent); GeoTIFF, COG, PNG, JPEG and VRT inputs; 1, 3 and 4+ bands; uint8, uint16 and float;
nodata values and masks; rasters without CRS."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_geotiff
from osgeo import gdal, osr

from model_core.inference import NODATA, SegmentOptions, segment
from model_core.inference.testing import modulo_model

K = 7


def _run(src, out, **kw):
    model, card = modulo_model(K, patch_size=32, **kw.pop("model_kw", {}))
    opts = SegmentOptions(str(src), str(out), min_overlap=8, device="cpu", **kw)
    return segment(opts, model=model, card=card)


def _img(shape, seed=0, hi=256, dtype=np.uint8):
    return np.random.default_rng(seed).integers(0, hi, shape).astype(dtype)


def test_output_has_input_size_geotransform_crs_and_styling(tmp_path):
    img = _img((3, 70, 90))
    src = write_geotiff(tmp_path / "in.tif", img, epsg=32631, origin=(600000.0, 5100000.0),
                        pixel=0.3)
    res = _run(src, tmp_path / "out.tif")
    ds_in, ds = gdal.Open(str(src)), gdal.Open(str(tmp_path / "out.tif"))
    assert (ds.RasterXSize, ds.RasterYSize, ds.RasterCount) == (90, 70, 1)
    assert ds.GetGeoTransform() == pytest.approx(ds_in.GetGeoTransform())
    a, b = osr.SpatialReference(), osr.SpatialReference()
    a.ImportFromWkt(ds.GetProjection())
    b.ImportFromWkt(ds_in.GetProjection())
    assert a.IsSame(b)
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte
    assert band.GetNoDataValue() == NODATA
    assert band.GetBlockSize() == [256, 256]
    assert ds.GetMetadata("IMAGE_STRUCTURE").get("COMPRESSION") == "DEFLATE"
    _, card = modulo_model(K, patch_size=32)
    ct = band.GetColorTable()
    for c in card.classes:
        assert ct.GetColorEntry(c.id)[:3] == c.color
    assert band.GetCategoryNames()[:K] == [c.name for c in card.classes]
    assert res.class_names == {c.id: c.name for c in card.classes}
    assert sum(res.class_pixels.values()) == 70 * 90
    # projected CRS: areas in square map units
    assert res.class_areas[3] == pytest.approx(res.class_pixels[3] * 0.09)
    assert not (tmp_path / "out.tif.part").exists()


def test_pixel_window_output_covers_exactly_the_window(tmp_path):
    img = _img((3, 80, 100), seed=2)
    src = write_geotiff(tmp_path / "in.tif", img, origin=(10.0, 50.0), pixel=0.5)
    _run(src, tmp_path / "out.tif", window=(30, 10, 41, 27))
    ds = gdal.Open(str(tmp_path / "out.tif"))
    assert (ds.RasterXSize, ds.RasterYSize) == (41, 27)
    assert ds.GetGeoTransform() == pytest.approx((25.0, 0.5, 0.0, 45.0, 0.0, -0.5))
    np.testing.assert_array_equal(ds.ReadAsArray(), img[0, 10:37, 30:71] % K)


def test_extent_partly_outside_is_clipped_to_the_raster(tmp_path):
    img = _img((3, 40, 50), seed=4)
    src = write_geotiff(tmp_path / "in.tif", img, origin=(0.0, 40.0), pixel=1.0)
    res = _run(src, tmp_path / "out.tif", extent=(-100.0, -5.0, 20.5, 30.0))
    # columns 0..21 (20.5 touches pixel 20), rows 10..40
    assert res.window == (0, 10, 21, 30)
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(),
                                  img[0, 10:40, 0:21] % K)


def test_raster_without_crs_or_geotransform(tmp_path):
    img = _img((3, 40, 45), seed=6)
    src = tmp_path / "in.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), 45, 40, 3, gdal.GDT_Byte)
    for i in range(3):
        ds.GetRasterBand(i + 1).WriteArray(img[i])
    ds = None
    res = _run(src, tmp_path / "out.tif")
    out = gdal.Open(str(tmp_path / "out.tif"))
    assert out.GetProjection() == ""
    assert out.GetGeoTransform(can_return_null=True) is None
    np.testing.assert_array_equal(out.ReadAsArray(), img[0] % K)
    assert res.class_areas == {k: float(v) for k, v in res.class_pixels.items()}  # pixels


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "COG", "VRT"])
def test_other_gdal_formats(tmp_path, fmt):
    img = _img((3, 50, 60), seed=8)
    base = write_geotiff(tmp_path / "base.tif", img)
    ext = {"PNG": "png", "JPEG": "jpg", "COG": "tif", "VRT": "vrt"}[fmt]
    src = tmp_path / f"in.{ext}"
    if fmt == "VRT":
        gdal.BuildVRT(str(src), [str(base)])
    else:
        gdal.Translate(str(src), str(base), format=fmt,
                       creationOptions=["QUALITY=100"] if fmt == "JPEG" else [])
    expect = gdal.Open(str(src)).ReadAsArray()[0] % K   # JPEG is lossy: what GDAL decodes
    _run(src, tmp_path / "out.tif")
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(), expect)


def test_single_band_is_replicated(tmp_path):
    img = _img((50, 40), seed=10)
    src = write_geotiff(tmp_path / "grey.tif", img)
    model, card = modulo_model(K, patch_size=32, record=True)
    segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), min_overlap=8, device="cpu"),
            model=model, card=card)
    local = model.calls[0]["local"]
    assert local.shape[1] == 3
    np.testing.assert_array_equal(local[:, 0].numpy(), local[:, 2].numpy())
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(), img % K)


def test_grey_and_alpha_is_a_single_band_raster_with_its_mask(tmp_path):
    """A scan warped with transparency (grey + alpha): the grey band is replicated, the alpha
    band masks, nothing asks for --bands."""
    img = _img((50, 40), seed=11)
    alpha = np.full((50, 40), 255, np.uint8)
    alpha[:, :12] = 0
    src = write_geotiff(tmp_path / "la.tif", np.stack([img, alpha]))
    ds = gdal.Open(str(src), gdal.GA_Update)
    ds.GetRasterBand(2).SetColorInterpretation(gdal.GCI_AlphaBand)
    ds = None
    _run(src, tmp_path / "out.tif")
    out = gdal.Open(str(tmp_path / "out.tif")).ReadAsArray()
    assert (out[:, :12] == NODATA).all()
    np.testing.assert_array_equal(out[:, 12:], img[:, 12:] % K)


def test_band_mapping_from_the_user(tmp_path):
    img = _img((5, 40, 40), seed=12)
    src = write_geotiff(tmp_path / "multi.tif", img)
    _run(src, tmp_path / "out.tif", bands=[5, 2, 1])
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(),
                                  img[4] % K)


def test_bands_named_red_green_blue_are_read_as_such(tmp_path):
    """A blue, green, red, near-infrared product (colour interpretation set, as satellite
    imagery often is): the model that reads red, green, blue gets bands 3, 2, 1; --bands and a
    model reading other bands are left alone; bands without colour names keep 1, 2, 3."""
    from model_core.inference import resolve_bands

    img = _img((4, 40, 40), seed=13)
    src = write_geotiff(tmp_path / "bgrn.tif", img)
    ds = gdal.Open(str(src), gdal.GA_Update)
    for b, ci in enumerate((gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand,
                            gdal.GCI_Undefined)):
        ds.GetRasterBand(b + 1).SetColorInterpretation(ci)
    ds = None
    model, card = modulo_model(K, patch_size=32, record=True)
    segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), min_overlap=8, device="cpu"),
            model=model, card=card)
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(), img[2] % K)
    local = model.calls[0]["local"][0]   # the top-left patch: red, green, blue = bands 3, 2, 1
    np.testing.assert_allclose(local[1].numpy() * 255, img[1, :32, :32].astype(float), atol=1e-3)
    np.testing.assert_allclose(local[2].numpy() * 255, img[0, :32, :32].astype(float), atol=1e-3)
    _run(src, tmp_path / "asked.tif", bands=[1, 2, 3])
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "asked.tif")).ReadAsArray(),
                                  img[0] % K)
    bgrn = ["Blue", "Green", "Red", "Undefined"]
    assert resolve_bands(None, [4, 1, 2], 4, 3, bgrn) == [4, 1, 2]   # a CIR model's own bands
    assert resolve_bands(None, [1, 2, 3], 4, 3, ["Gray"] * 4) == [1, 2, 3]
    assert resolve_bands(None, [1, 2, 3], 4, 3, ["Red", "Red", "Green", "Blue"]) == [1, 2, 3]
    assert resolve_bands(None, [1, 2, 3], 4, 3, ["Red", "Green", "Blue", "Alpha"]) == [1, 2, 3]


def _paletted(path, idx: np.ndarray, nodata: int | None = None):
    """A one-band index raster whose table maps i to red (5 i) mod 256, green 255 - i, blue 40."""
    ds = gdal.Open(str(write_geotiff(path, idx, nodata=nodata)), gdal.GA_Update)
    table = gdal.ColorTable()
    for i in range(256):
        table.SetColorEntry(i, ((5 * i) % 256, 255 - i, 40, 255))
    ds.GetRasterBand(1).SetRasterColorTable(table)
    ds.GetRasterBand(1).SetColorInterpretation(gdal.GCI_PaletteIndex)
    ds = None
    return path


def test_paletted_raster_is_read_as_its_colours(tmp_path):
    """The model sees the colours QGIS draws, not the indices; a nodata index is nodata; with
    --bands the indices themselves are read; the input is left as it was."""
    idx = _img((40, 50), seed=21)
    src = _paletted(tmp_path / "pal.tif", idx)
    model, card = modulo_model(K, patch_size=32, record=True)
    segment(SegmentOptions(str(src), str(tmp_path / "out.tif"), min_overlap=8, device="cpu"),
            model=model, card=card)
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "out.tif")).ReadAsArray(),
                                  (5 * idx.astype(int)) % 256 % K)
    green = model.calls[0]["local"][0, 1].numpy() * 255
    np.testing.assert_allclose(green, 255 - idx[:32, :32].astype(float), atol=1e-3)
    _run(src, tmp_path / "idx.tif", bands=[1])
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "idx.tif")).ReadAsArray(), idx % K)
    holed = idx.copy()
    holed[:10] = 3
    src = _paletted(tmp_path / "holed.tif", holed, nodata=3)
    _run(src, tmp_path / "holed_out.tif")
    out = gdal.Open(str(tmp_path / "holed_out.tif")).ReadAsArray()
    assert (out[holed == 3] == NODATA).all()
    keep = holed != 3
    np.testing.assert_array_equal(out[keep], ((5 * holed.astype(int)) % 256 % K)[keep])
    assert gdal.Open(str(src)).RasterCount == 1 and not list(tmp_path.glob("*.vrt"))


def test_uint16_with_scale_override_and_float(tmp_path):
    img16 = _img((3, 40, 40), seed=14, hi=4000, dtype=np.uint16)
    src = write_geotiff(tmp_path / "u16.tif", img16)
    model, card = modulo_model(K, patch_size=32, value_range=4000.0)
    segment(SegmentOptions(str(src), str(tmp_path / "o16.tif"), min_overlap=8, device="cpu",
                           scale=(0.0, 4000.0)), model=model, card=card)
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "o16.tif")).ReadAsArray(),
                                  img16[0] % K)
    imgf = (_img((3, 40, 40), seed=15).astype(np.float32) / 255.0)
    srcf = write_geotiff(tmp_path / "f.tif", imgf)
    _run(srcf, tmp_path / "of.tif", scale=(0.0, 1.0))
    np.testing.assert_array_equal(gdal.Open(str(tmp_path / "of.tif")).ReadAsArray(),
                                  np.round(imgf[0] * 255).astype(int) % K)


def test_nodata_values_and_masks_become_output_nodata(tmp_path):
    img = _img((3, 60, 70), seed=16, hi=250)
    img[:, 5:20, 10:30] = 250          # nodata value in all bands
    img[1, 40:45, 50:60] = 250         # nodata in one band only: the pixel is nodata too
    src = write_geotiff(tmp_path / "nd.tif", img, nodata=250)
    res = _run(src, tmp_path / "out.tif")
    out = gdal.Open(str(tmp_path / "out.tif")).ReadAsArray()
    expect = (img[0] % K).astype(np.uint8)
    nodata = (img == 250).any(axis=0)
    expect[nodata] = NODATA
    np.testing.assert_array_equal(out, expect)
    assert sum(res.class_pixels.values()) == (~nodata).sum()

    # an all-nodata raster runs no patch through the model and is all nodata
    empty = write_geotiff(tmp_path / "empty.tif", np.full((3, 40, 40), 250, np.uint8),
                          nodata=250)
    model, card = modulo_model(K, patch_size=32, record=True)
    segment(SegmentOptions(str(empty), str(tmp_path / "e.tif"), min_overlap=8, device="cpu"),
            model=model, card=card)
    assert model.calls == []
    assert (gdal.Open(str(tmp_path / "e.tif")).ReadAsArray() == NODATA).all()


def test_alpha_mask_band_is_respected(tmp_path):
    img = _img((4, 40, 50), seed=18)
    img[3] = 255
    img[3, 10:30, 5:25] = 0
    src = tmp_path / "rgba.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(src), 50, 40, 4, gdal.GDT_Byte)
    for i in range(4):
        ds.GetRasterBand(i + 1).WriteArray(img[i])
    ds.GetRasterBand(4).SetColorInterpretation(gdal.GCI_AlphaBand)
    ds = None
    _run(src, tmp_path / "out.tif")
    out = gdal.Open(str(tmp_path / "out.tif")).ReadAsArray()
    expect = (img[0] % K).astype(np.uint8)
    expect[img[3] == 0] = NODATA
    np.testing.assert_array_equal(out, expect)
