"""Rasters placed on the ground only by GCPs or RPCs: read through GDAL's warper as QGIS draws
them, so the class raster and the polygons lie on the input in the map (they used to come out
in pixel coordinates, with no georeferencing)."""

from __future__ import annotations

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from model_core.inference import SegmentOptions, segment
from model_core.inference.testing import modulo_model
from model_core.inference.warped import placement

K = 7
BLOCK = 10


def _wkt(epsg: int) -> str:
    s = osr.SpatialReference()
    s.ImportFromEPSG(epsg)
    return s.ExportToWkt()


def _blocks(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(3, h, w) bytes constant over BLOCK x BLOCK squares (band 1 decides the modulo label)."""
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 250, (3, -(-h // BLOCK), -(-w // BLOCK)))
    return np.repeat(np.repeat(cells, BLOCK, 1), BLOCK, 2)[:, :h, :w].astype(np.uint8)


def _raster(path, img: np.ndarray):
    ds = gdal.GetDriverByName("GTiff").Create(str(path), img.shape[2], img.shape[1],
                                              img.shape[0], gdal.GDT_Byte)
    for i in range(img.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(img[i])
    return ds


def _gcp_raster(path, img: np.ndarray, affine: tuple[float, ...], epsg: int = 32631):
    """GCPs at the corners and centre of ``img`` following the affine (x0, a, b, y0, c, d)."""
    x0, a, b, y0, c, d = affine
    h, w = img.shape[1:]
    ds = _raster(path, img)
    pts = [(0, 0), (w, 0), (0, h), (w, h), (w / 2, h / 2)]
    ds.SetGCPs([gdal.GCP(x0 + a * px + b * py, y0 + c * px + d * py, 0, px, py)
                for px, py in pts], _wkt(epsg))
    ds = None
    return path


def _run(src, tmp_path, model, card, **kw):
    out = tmp_path / "classes.tif"
    res = segment(SegmentOptions(str(src), str(out), min_overlap=8, device="cpu", **kw),
                  model=model, card=card)
    return res, gdal.Open(str(out))


def test_gcps_on_a_grid_give_that_grid_and_the_same_labels(tmp_path):
    img = _blocks(70, 90)
    src = _gcp_raster(tmp_path / "scan.tif", img, (600000.0, 0.5, 0.0, 5750000.0, 0.0, -0.5))
    before = sorted(p.name for p in tmp_path.iterdir())
    model, card = modulo_model(K, patch_size=32)
    card.gsd = 0.5
    res, ds = _run(src, tmp_path, model, card, vector=str(tmp_path / "classes.gpkg"))
    assert ds.GetGeoTransform() == pytest.approx((600000.0, 0.5, 0.0, 5750000.0, 0.0, -0.5))
    assert osr.SpatialReference(wkt=ds.GetProjection()).GetAuthorityCode(None) == "32631"
    np.testing.assert_array_equal(ds.ReadAsArray(), img[0] % K)
    assert "native resolution (0.5 m" in res.processing
    vec = ogr.Open(str(tmp_path / "classes.gpkg"))
    layer = vec.GetLayer(0)
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32631"
    xmin, xmax, ymin, ymax = layer.GetExtent()
    assert (xmin, xmax, ymin, ymax) == pytest.approx((600000, 600045, 5749965, 5750000))
    assert sum(f.GetField("area") for f in layer) == pytest.approx(90 * 70 * 0.25)
    # the input is read, never written: no geotransform or sidecar file added to it
    assert gdal.Open(str(src)).GetGeoTransform(can_return_null=True) is None
    after = sorted(p.name for p in tmp_path.iterdir())
    assert set(after) - set(before) == {"classes.tif", "classes.tif.aux.xml", "classes.gpkg"}


def test_rotated_gcps_are_warped_north_up_with_the_outside_as_nodata(tmp_path):
    """A scan turned by 36.87 degrees (0.5 m pixels): the output is the north-up grid GDAL
    suggests, nodata outside the image's footprint, and each block's label where the GCPs put
    that block on the ground."""
    img = _blocks(80, 100, seed=1)
    aff = (600000.0, 0.4, 0.3, 5750000.0, 0.3, -0.4)   # x = x0 + 0.4 col + 0.3 row, ...
    src = _gcp_raster(tmp_path / "scan.tif", img, aff)
    model, card = modulo_model(K, patch_size=32)
    card.gsd = 0.5
    _, ds = _run(src, tmp_path, model, card)
    gt = ds.GetGeoTransform()
    assert gt[2] == gt[4] == 0 and gt[1] == pytest.approx(-gt[5])
    out = ds.GetRasterBand(1).ReadAsArray()
    nodata = ds.GetRasterBand(1).GetNoDataValue()
    # footprint corners: (0,0) -> (600000, 5750000); (100, 0) -> (600040, 5750030); ...
    xs = [600000.0 + 0.4 * c + 0.3 * r for c, r in ((0, 0), (100, 0), (0, 80), (100, 80))]
    ys = [5750000.0 + 0.3 * c - 0.4 * r for c, r in ((0, 0), (100, 0), (0, 80), (100, 80))]
    assert gt[0] == pytest.approx(min(xs), abs=gt[1]) and gt[3] == pytest.approx(max(ys),
                                                                                  abs=gt[1])
    assert out[0, 0] == nodata and out[-1, -1] == nodata   # bounding-box corners: outside
    det = 0.4 * -0.4 - 0.3 * 0.3
    checked = 0
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            x = gt[0] + (col + 0.5) * gt[1] - aff[0]
            y = gt[3] + (row + 0.5) * gt[5] - aff[3]
            c = (-0.4 * x - 0.3 * y) / det   # inverse of the affine
            r = (-0.3 * x + 0.4 * y) / det
            if not (1.5 < c < 98.5 and 1.5 < r < 78.5):
                continue
            if min(c % BLOCK, BLOCK - c % BLOCK, r % BLOCK, BLOCK - r % BLOCK) < 1.5:
                continue   # bilinear mixes neighbouring blocks near their borders
            assert out[row, col] == img[0, int(r), int(c)] % K, (row, col)
            checked += 1
    assert checked > 3000


def _rpc(width: int, height: int, lon: float, lat: float, pixel_m: float) -> dict[str, str]:
    """A linear RPC: sample grows with longitude, line with falling latitude."""
    dlat = pixel_m / 111320.0
    dlon = dlat / np.cos(np.radians(lat))
    zeros = ["0"] * 20

    def coeffs(i: int, v: str) -> str:
        c = list(zeros)
        c[i] = v
        return " ".join(c)

    return {"LINE_OFF": str(height / 2), "SAMP_OFF": str(width / 2),
            "LAT_OFF": str(lat), "LONG_OFF": str(lon), "HEIGHT_OFF": "0",
            "LINE_SCALE": str(height / 2), "SAMP_SCALE": str(width / 2),
            "LAT_SCALE": str(height / 2 * dlat), "LONG_SCALE": str(width / 2 * dlon),
            "HEIGHT_SCALE": "1",
            "LINE_NUM_COEFF": coeffs(2, "-1"), "LINE_DEN_COEFF": coeffs(0, "1"),
            "SAMP_NUM_COEFF": coeffs(1, "1"), "SAMP_DEN_COEFF": coeffs(0, "1")}


def test_rpc_scene_is_placed_in_wgs84_with_areas_on_the_ground(tmp_path):
    img = _blocks(60, 80, seed=2)
    ds = _raster(tmp_path / "scene.tif", img)
    ds.SetMetadata(_rpc(80, 60, 5.0, 52.0, 0.5), "RPC")
    ds = None
    src = tmp_path / "scene.tif"
    assert placement(gdal.Open(str(src))) == "rpc"
    model, card = modulo_model(K, patch_size=32)
    card.gsd = 0.5
    res, out = _run(src, tmp_path, model, card, vector=str(tmp_path / "classes.gpkg"))
    srs = osr.SpatialReference(wkt=out.GetProjection())
    assert srs.IsGeographic() and srs.GetAuthorityCode(None) == "4326"
    gt = out.GetGeoTransform()
    dlat = 0.5 / 111320.0
    dlon = dlat / np.cos(np.radians(52.0))
    assert gt[0] == pytest.approx(5.0 - 40 * dlon, abs=2 * dlon)
    assert gt[3] == pytest.approx(52.0 + 30 * dlat, abs=2 * dlat)
    assert "native resolution (0.5 m" in res.processing
    labels = out.ReadAsArray()
    # away from block borders the labels are the blocks' (the grid is the image's, within GDAL's
    # suggested pixel size)
    rows = np.arange(labels.shape[0])[:, None] * (60 / labels.shape[0])
    cols = np.arange(labels.shape[1])[None, :] * (80 / labels.shape[1])
    inner = ((rows % BLOCK > 2) & (rows % BLOCK < 8) & (cols % BLOCK > 2) & (cols % BLOCK < 8))
    r, c = np.broadcast_arrays(rows.astype(int), cols.astype(int))
    expect = img[0][np.clip(r, 0, 59), np.clip(c, 0, 79)] % K
    assert (labels[inner] == expect[inner]).mean() > 0.99
    vec = ogr.Open(str(tmp_path / "classes.gpkg"))   # the layer lives as long as this
    layer = vec.GetLayer(0)
    total = sum(f.GetField("area") for f in layer)
    assert total == pytest.approx(80 * 60 * 0.25, rel=0.03)   # m2, not square degrees


def test_rasters_with_a_geotransform_or_nothing_are_not_warped(tmp_path):
    mem = gdal.GetDriverByName("MEM").Create("", 20, 20, 3, gdal.GDT_Byte)
    assert placement(mem) is None                       # nothing places it: pixel space
    mem.SetGCPs([gdal.GCP(600000.0 + i, 5750000.0 - i, 0, i, 2 * i) for i in range(3)],
                _wkt(32631))
    assert placement(mem) == "gcps"
    mem.SetGeoTransform((600000.0, 0.5, 0.0, 5750000.0, 0.0, -0.5))
    assert placement(mem) is None                       # the geotransform wins, as in QGIS


def test_output_over_a_gcp_input_is_refused(tmp_path):
    img = _blocks(30, 30)
    src = _gcp_raster(tmp_path / "scan.tif", img, (600000.0, 0.5, 0.0, 5750000.0, 0.0, -0.5))
    model, card = modulo_model(K, patch_size=32)
    with pytest.raises(ValueError, match="is the input raster"):
        segment(SegmentOptions(str(src), str(src), device="cpu"), model=model, card=card)
    assert gdal.Open(str(src)).GetGCPCount() == 5


def test_paletted_scan_with_gcps_warps_colours_not_indices(tmp_path):
    """The palette is expanded before the warp: bilinear interpolation between two indices
    would give the table's colour of some third index. On a turned scan, the pixels across
    block borders are blends of two table colours (most of them in no table entry), and the
    block interiors keep their own colour's label."""
    idx = _blocks(70, 90, seed=3)[0]
    ds = _raster(tmp_path / "scan.tif", idx[None])
    table = gdal.ColorTable()
    for i in range(256):
        table.SetColorEntry(i, ((5 * i) % 256, 255 - i, 40, 255))
    ds.GetRasterBand(1).SetRasterColorTable(table)
    ds.GetRasterBand(1).SetColorInterpretation(gdal.GCI_PaletteIndex)
    ds.SetGCPs([gdal.GCP(600000.0 + 0.4 * c + 0.3 * r, 5750000.0 + 0.3 * c - 0.4 * r, 0, c, r)
                for c, r in ((0, 0), (90, 0), (0, 70), (90, 70))], _wkt(32631))
    ds = None
    model, card = modulo_model(K, patch_size=32, record=True)
    card.gsd = 0.5
    _, out = _run(tmp_path / "scan.tif", tmp_path, model, card)
    assert osr.SpatialReference(wkt=out.GetProjection()).GetAuthorityCode(None) == "32631"
    entries = {((5 * i) % 256, 255 - i) for i in range(256)}
    pixels = np.concatenate([c["local"][:, :2].permute(0, 2, 3, 1).reshape(-1, 2).numpy()
                             for c in model.calls]) * 255
    pairs = {(int(round(r)), int(round(g))) for r, g in pixels}
    blends = [p for p in pairs if p not in entries and p != (0, 0)]
    assert len(blends) > 50
    labels = out.ReadAsArray()
    reds = {(5 * int(i)) % 256 % K for i in np.unique(idx)}
    assert set(np.unique(labels)) - {255} <= set(range(K)) and reds <= set(np.unique(labels))
