"""Polygon masks in the engine (``SegmentOptions.mask``, ``--mask``): an L-shaped polygon and two
polygons far apart, stored in EPSG:4326 over an EPSG:32631 raster. Outside the polygons the class
raster is nodata and there is no polygon; inside, the labels are the unmasked run's (contexts
still come from the whole raster); patches touching no polygon are not run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from plugin_fixtures import make_rgb, make_tiny_model

from model_core.inference import NODATA, SegmentOptions, segment

X0, Y0, PX = 500000.0, 5000000.0, 0.5          # make_rgb's origin and pixel size


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def _utm_polygon(rings_px: list[list[tuple[int, int]]]) -> ogr.Geometry:
    """A (multi)polygon from rings of (col, row) pixel corners of make_rgb's grid, EPSG:32631."""
    multi = ogr.Geometry(ogr.wkbMultiPolygon)
    for ring_px in rings_px:
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for c, r in ring_px + ring_px[:1]:
            ring.AddPoint_2D(X0 + c * PX, Y0 - r * PX)
        poly = ogr.Geometry(ogr.wkbPolygon)
        poly.AddGeometry(ring)
        multi.AddGeometry(poly)
    return multi


def _write_mask(path: Path, geoms: list[ogr.Geometry], epsg: int = 4326,
                kind: int = ogr.wkbMultiPolygon) -> Path:
    """The geometries (EPSG:32631) reprojected to ``epsg`` in a GeoPackage, one feature each."""
    utm, target = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32631)
    target.ImportFromEPSG(epsg)
    for s in (utm, target):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(utm, target)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    layer = ds.CreateLayer("fields", target, kind)
    for g in geoms:
        g = g.Clone()
        g.Transform(ct)
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetGeometry(g)
        layer.CreateFeature(f)
    ds = None
    return path


def _burn(geom: ogr.Geometry, gt, w: int, h: int) -> np.ndarray:
    """Pixels of the (w, h) grid ``gt`` whose centre lies in ``geom`` (EPSG:32631)."""
    mem = ogr.GetDriverByName("Memory").CreateDataSource("m")
    layer = mem.CreateLayer("m", None, ogr.wkbUnknown)
    f = ogr.Feature(layer.GetLayerDefn())
    f.SetGeometry(geom)
    layer.CreateFeature(f)
    ds = gdal.GetDriverByName("MEM").Create("", w, h, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    gdal.RasterizeLayer(ds, [1], layer, burn_values=[1])
    return ds.ReadAsArray().astype(bool)


def _labels(path) -> tuple[np.ndarray, tuple]:
    ds = gdal.Open(str(path))
    return ds.ReadAsArray(), ds.GetGeoTransform()


def _check_against_full(masked, full, union: ogr.Geometry, vector: Path) -> np.ndarray:
    """Nodata outside ``union``, the full run's labels inside, polygons inside only."""
    lab, gt = _labels(masked)
    full_lab, full_gt = _labels(full)
    inside = _burn(union, gt, lab.shape[1], lab.shape[0])
    assert inside.any() and (~inside).any()
    assert (lab[~inside] == NODATA).all()
    assert (lab[inside] != NODATA).all()
    c0, r0 = round((gt[0] - full_gt[0]) / PX), round((full_gt[3] - gt[3]) / PX)
    same = full_lab[r0:r0 + lab.shape[0], c0:c0 + lab.shape[1]]
    np.testing.assert_array_equal(lab[inside], same[inside])
    ds = ogr.Open(str(vector))
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() > 0
    grown = union.Buffer(0.01)
    for f in layer:
        assert grown.Contains(f.GetGeometryRef()), f.GetGeometryRef().ExportToWkt()[:200]
    return inside


def test_l_shaped_mask_in_another_crs(tmp_path, tiny_model):
    raster = make_rgb(tmp_path / "scene.tif", size=420)
    # an L: a 300 x 80 px bar at the top left and a 80 x 300 px leg down the left side
    l_shape = _utm_polygon([[(30, 20), (330, 20), (330, 100), (110, 100), (110, 320),
                             (30, 320)]])
    mask = _write_mask(tmp_path / "l.gpkg", [l_shape])
    full = segment(SegmentOptions(str(raster), str(tmp_path / "full.tif"), model=str(tiny_model),
                                  device="cpu", batch_size=1))
    res = segment(SegmentOptions(str(raster), str(tmp_path / "masked.tif"),
                                 vector=str(tmp_path / "masked.gpkg"), model=str(tiny_model),
                                 device="cpu", batch_size=1, mask=str(mask)))
    # the extent shrank to the L's bounding box, the patches of its empty corner were not run
    assert (res.width, res.height) == (300, 300)
    assert res.window == (30, 20, 300, 300)
    assert res.patches < full.patches
    print(f"L-shape: {res.patches} of {full.patches} patches, {res.seconds:.1f} s "
          f"(whole raster {full.seconds:.1f} s)")
    inside = _check_against_full(res.output, full.output, l_shape, tmp_path / "masked.gpkg")
    assert sum(res.class_pixels.values()) == inside.sum()


def test_two_far_apart_polygons_skip_the_patches_between(tmp_path, tiny_model):
    raster = make_rgb(tmp_path / "wide.tif", size=1200)
    fields = [_utm_polygon([[(10, 10), (70, 10), (70, 60), (10, 60)]]),
              _utm_polygon([[(1120, 1130), (1190, 1130), (1190, 1190), (1120, 1190)]])]
    mask = _write_mask(tmp_path / "two.gpkg", fields)
    union = fields[0].Union(fields[1])
    full = segment(SegmentOptions(str(raster), str(tmp_path / "full.tif"), model=str(tiny_model),
                                  device="cpu", batch_size=1))
    messages = []
    res = segment(SegmentOptions(str(raster), str(tmp_path / "masked.tif"),
                                 vector=str(tmp_path / "masked.gpkg"), model=str(tiny_model),
                                 device="cpu", batch_size=1, mask=str(mask)),
                  progress=lambda f, m: messages.append(m))
    assert full.grid == (15, 15) and full.patches == 225
    assert res.patches <= 4, res.patches          # one or two patches per field
    assert f"patch {res.patches}/{res.patches}" in messages
    assert res.seconds < full.seconds
    print(f"two fields: {res.patches} of {full.patches} patches, {res.seconds:.1f} s "
          f"(whole raster {full.seconds:.1f} s)")
    _check_against_full(res.output, full.output, union, tmp_path / "masked.gpkg")


def test_mask_errors_name_the_problem(tmp_path, tiny_model):
    raster = make_rgb(tmp_path / "scene.tif", size=160)
    out = tmp_path / "o.tif"

    def run(mask, **kw):
        return segment(SegmentOptions(str(raster), str(out), model=str(tiny_model),
                                      device="cpu", mask=str(mask), **kw))

    with pytest.raises(FileNotFoundError, match="does not exist"):
        run(tmp_path / "missing.gpkg")
    far = _write_mask(tmp_path / "far.gpkg",
                      [_utm_polygon([[(5000, 5000), (5010, 5000), (5010, 5010)]])])
    with pytest.raises(ValueError, match="do not overlap the raster"):
        run(far)
    point = ogr.Geometry(ogr.wkbPoint)
    point.AddPoint_2D(X0 + 10, Y0 - 10)
    points = _write_mask(tmp_path / "points.gpkg", [point], kind=ogr.wkbPoint)
    with pytest.raises(ValueError, match="no polygon"):
        run(points)
    inside = _write_mask(tmp_path / "in.gpkg", [_utm_polygon([[(10, 10), (50, 10), (50, 50)]])])
    with pytest.raises(ValueError, match="do not overlap the chosen extent"):
        run(inside, extent=(X0 + 60, Y0 - 70, X0 + 70, Y0 - 60))
    with pytest.raises(ValueError, match="no layer 'nope'"):
        run(inside, mask_layer="nope")
    assert not out.exists() and not list(tmp_path.glob("o.tif*"))


def test_command_line_mask_flag(tmp_path):
    from model_core.inference.cli import options_from_args
    from test_run_options import _segment_parser

    args = _segment_parser().parse_args(["a.tif", "b.tif", "--mask", "m.gpkg",
                                         "--mask-layer", "fields"])
    opts = options_from_args(args)
    assert opts.mask == "m.gpkg" and opts.mask_layer == "fields"


def test_mask_with_column_groups_and_batches(tmp_path):
    """The merge counts skipped patches in every column group (tiny memory budget) and batch
    size: nodata outside, the model's labels inside (a model whose labels are a function of
    each pixel's value)."""
    from model_core.inference.testing import modulo_model

    rng = np.random.default_rng(3)
    img = np.stack([rng.integers(0, 250, (180, 260))] * 3).astype(np.uint8)
    raster = tmp_path / "img.tif"
    from conftest import write_geotiff

    write_geotiff(raster, img)
    shapes = [_utm_polygon([[(5, 5), (60, 5), (60, 30), (20, 30), (20, 90), (5, 90)]]),
              _utm_polygon([[(200, 120), (250, 120), (250, 170), (200, 170)]])]
    mask = _write_mask(tmp_path / "m.gpkg", shapes, epsg=3857)
    union = shapes[0].Union(shapes[1])
    for mem, bs in ((1024.0, 3), (0.02, 1), (0.005, 4)):
        model, card = modulo_model(4, patch_size=32)
        out = tmp_path / f"o{bs}.tif"
        res = segment(SegmentOptions(str(raster), str(out), device="cpu", batch_size=bs,
                                     memory_mb=mem, min_overlap=8, mask=str(mask)),
                      model=model, card=card)
        lab, gt = _labels(out)
        assert res.window == (5, 5, 245, 165)
        inside = _burn(union, gt, lab.shape[1], lab.shape[0])
        assert (lab[~inside] == NODATA).all()
        np.testing.assert_array_equal(lab[inside], (img[0, 5:170, 5:250] % 4)[inside])
        assert res.patches < res.grid[0] * res.grid[1]
