"""The QGIS-free side of fine-tuning (model_core.training.gis / area / finetune): polygons in
another CRS burnt onto the raster's pixels, coarser label rasters resampled with nearest
neighbour, classes from text and integer fields and from the base model, the spatial hold-out,
the engine's 16-bit stretch reproduced for training, and the size bound.
No training here (tests/test_train_algorithms.py trains)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_geotiff
from train_fixtures import ROOFS, make_scene, write_label_raster, write_polygons

from model_core.training.area import read_training_area, split_spatially
from model_core.training.gis import IGNORE, LabelError, LabelSource

DG = [(0, "unknown", (0, 0, 0)), (1, "urban", (0, 255, 255)), (2, "agriculture", (255, 255, 0))]


def _truth(size: int = 256) -> np.ndarray:
    lab = np.zeros((size, size), np.uint8)
    for x, y, s, kind in ROOFS:
        lab[y:y + s, x:x + s] = 1 if kind == "roof" else 2
    return lab


def _read(raster, source, **kw):
    return read_training_area(str(raster), source, in_chans=3, card_bands=[1, 2, 3],
                              card_scale=(0.0, 255.0), **kw)


@pytest.mark.parametrize("epsg", [32631, 4326, 3857])
def test_polygons_in_any_crs_land_on_their_pixels(tmp_path, epsg):
    raster = make_scene(tmp_path / "scene.tif")
    polys = write_polygons(tmp_path / "p.gpkg", epsg=epsg)
    area = _read(raster, LabelSource(str(polys), field="kind"),
                 extent=(500000, 4999872, 500128, 5000000))
    truth = _truth()
    assert area.window == (0, 0, 256, 256)
    assert [c[1] for c in area.labels.classes] == ["roof", "shed"]
    lab = area.label
    # text classes in order of first appearance; outside the polygons: ignored
    expect = np.where(truth == 0, IGNORE, truth - 1)
    agree = (lab == expect).mean()
    assert agree > 0.995, agree           # only edge pixels of reprojected squares may differ
    assert area.image.dtype == np.uint8 and area.image.shape == (3, 256, 256)


def test_without_class_field_polygons_against_background_in_the_labels_extent(tmp_path):
    raster = make_scene(tmp_path / "scene.tif")
    polys = write_polygons(tmp_path / "p.gpkg", field=None)
    area = _read(raster, LabelSource(str(polys), name="buildings"))
    assert [c[:2] for c in area.labels.classes] == [(0, "background"), (1, "buildings")]
    x0, y0 = min(r[0] for r in ROOFS), min(r[1] for r in ROOFS)
    x1 = max(r[0] + r[2] for r in ROOFS)
    y1 = max(r[1] + r[2] for r in ROOFS)
    # the EPSG:4326 polygons' extent, reprojected, may take one more pixel per side
    assert np.abs(np.subtract(area.window, (x0, y0, x1 - x0, y1 - y0))).max() <= 2
    assert set(np.unique(area.label)) == {0, 1}
    assert area.pixel_size_m == pytest.approx(0.5, rel=1e-3)


def test_names_of_the_base_model_keep_its_ids(tmp_path):
    raster = make_scene(tmp_path / "scene.tif")
    polys = write_polygons(tmp_path / "p.gpkg", values=["Urban", "agriculture"] * 2 + ["urban"])
    area = _read(raster, LabelSource(str(polys), field="kind"), base_classes=DG)
    assert area.labels.matched_base and area.labels.num_classes == 3
    assert set(np.unique(area.label)) == {1, 2, IGNORE}


def test_coarser_label_raster_is_resampled_nearest(tmp_path):
    raster = make_scene(tmp_path / "scene.tif")
    lab = write_label_raster(tmp_path / "lab.tif", factor=2)
    area = _read(raster, LabelSource(str(lab)))
    assert area.window == (0, 0, 256, 256)
    assert [c[0] for c in area.labels.classes] == [0, 1, 2]
    truth = _truth()
    coarse = np.repeat(np.repeat(truth[::2, ::2], 2, 0), 2, 1)
    assert (area.label == coarse).all()


def test_16_bit_rasters_are_stretched_as_the_engine_does(tmp_path):
    from model_core.inference.reader import GdalReader
    from model_core.inference.stretch import resolve_scaling

    raster = make_scene(tmp_path / "scene16.tif", dtype=np.uint16)
    lab = write_label_raster(tmp_path / "lab.tif", factor=1)
    area = _read(raster, LabelSource(str(lab)))
    assert area.scaling == "stretch" and set(area.cuts) == {1, 2, 3}
    with GdalReader(str(raster)) as r:
        s = resolve_scaling(None, (0.0, 255.0), r, [1, 2, 3])
        engine = np.clip(np.rint(s.reader.read(0, 0, 256, 256, [1, 2, 3])), 0, 255)
    assert area.image.dtype == np.uint8 and (area.image == engine).all()


def test_single_band_is_replicated_and_unfit_bands_are_refused(tmp_path):
    grey = make_scene(tmp_path / "grey.tif", bands=1)
    lab = write_label_raster(tmp_path / "lab.tif")
    area = _read(grey, LabelSource(str(lab)))
    assert area.bands == [1, 1, 1] and area.image.shape[0] == 3
    two = make_scene(tmp_path / "two.tif", bands=2)
    with pytest.raises(LabelError, match="takes 3 input bands"):
        _read(two, LabelSource(str(lab)))


def test_spatial_split_holds_out_a_strip(tmp_path):
    raster = make_scene(tmp_path / "scene.tif")
    lab = write_label_raster(tmp_path / "lab.tif")
    area = _read(raster, LabelSource(str(lab)), extent=(500000, 4999872, 500128, 5000000))
    train, val, info = split_spatially(area, 0.25, 64)
    assert info["axis"] == "columns"
    assert train.size[0] + val.size[0] == 256 and train.size[1] == val.size[1] == 256
    assert 0.15 < info["val_labelled_share"] < 0.35
    _, none, _ = split_spatially(area, 0.0, 64)
    assert none is None
    _, none, info = split_spatially(area, 0.2, 200)     # too small: no validation, a note
    assert none is None and "too small to hold out" in info["note"]


def test_bounds_and_bad_labels(tmp_path):
    raster = make_scene(tmp_path / "scene.tif")
    far = write_polygons(tmp_path / "far.gpkg", shift=10000.0)
    with pytest.raises(LabelError, match="outside the raster"):
        _read(raster, LabelSource(str(far)))
    polys = write_polygons(tmp_path / "p.gpkg")
    with pytest.raises(LabelError, match="more than 100 x 100"):
        _read(raster, LabelSource(str(polys)), max_side=100)
    ints = write_label_raster(tmp_path / "one.tif")
    from osgeo import gdal
    ds = gdal.Open(str(ints), gdal.GA_Update)
    ds.GetRasterBand(1).Fill(1)
    ds = None
    with pytest.raises(LabelError, match="one class only"):
        _read(raster, LabelSource(str(ints)))
    # unlabelled value 255 and nodata pixels of the raster are ignored
    arr = np.full((256, 256), 255, np.uint8)
    arr[:10] = 1
    arr[10:20] = 0
    lab = write_geotiff(tmp_path / "sparse.tif", arr)
    area = _read(raster, LabelSource(str(lab)))
    assert (area.label[20:] == IGNORE).all()


def test_a_0_255_mask_is_two_classes_for_training_and_for_a_two_class_model(tmp_path):
    """fctl:train and fctl:evaluate on a 0/255 building mask (Inria, SpaceNet): 255 is the
    mask's class 1, not "unlabelled", which left one class and refused to train."""
    from model_core.training.gis import rasterize_labels

    raster = make_scene(tmp_path / "scene.tif")
    truth = (_truth() == 1).astype(np.uint8)
    mask = write_geotiff(tmp_path / "mask.tif", truth * 255)
    area = _read(raster, LabelSource(str(mask)))
    np.testing.assert_array_equal(area.label, truth)
    assert [c[0] for c in area.labels.classes] == [0, 1]
    binary = [(0, "background", (0, 0, 0)), (1, "building", (255, 0, 0))]
    scored = rasterize_labels(LabelSource(str(mask)), area.grid, binary, strict=True)
    np.testing.assert_array_equal(scored.label, truth)
    # for a model of other classes 255 stays unlabelled: only class 0 is scored
    other = rasterize_labels(LabelSource(str(mask)), area.grid, DG, strict=True)
    assert set(np.unique(other.label)) == {0, IGNORE}
    # the bundled land-cover model scores none of it (its 0 is "unknown"): fctl:evaluate says
    # so before segmenting, as `evaluate` does, instead of returning an empty mIoU
    from model_core.training.gis_evaluate import evaluate_labels

    with pytest.raises(ValueError, match=r"no pixel of a class the model scores.*0 unknown"):
        evaluate_labels(str(raster), LabelSource(str(mask)), None, device="cpu")


def test_validation_points_divide_the_steps():
    from model_core.training.finetune import epochs_for

    assert epochs_for(300) == 10 and epochs_for(4) == 1 and epochs_for(120) == 6


def test_training_area_at_a_pixel_size_over_the_same_ground(tmp_path):
    """fctl:train's PIXEL_SIZE: pixels averaged (coarser) or cubic (finer) as the engine reads
    rasters, polygons burnt on the training grid itself (not enlarged from the raster's), the
    grid over the same ground; within 1 % of the raster's pixel size nothing changes."""
    from osgeo import gdal

    raster = make_scene(tmp_path / "scene.tif")
    polys = LabelSource(str(write_polygons(tmp_path / "p.gpkg", epsg=32631)), field="kind")
    whole = dict(extent=(500000, 4999872, 500128, 5000000))
    area = _read(raster, polys, **whole)
    assert area.pixel_size_m == pytest.approx(0.5, rel=1e-3) == area.raster_pixel_size_m
    coarse = _read(raster, polys, pixel_size=1.0, **whole)
    assert coarse.image.shape == (3, 128, 128) and coarse.label.shape == (128, 128)
    assert coarse.pixel_size_m == 1.0 and coarse.raster_pixel_size_m == pytest.approx(0.5)
    assert coarse.grid.bounds == pytest.approx(area.grid.bounds)
    assert coarse.grid.geotransform[1] == pytest.approx(1.0)
    avg = gdal.Translate("", str(raster), format="MEM", width=128, height=128,
                         resampleAlg="average").ReadAsArray()
    assert np.array_equal(coarse.image, avg)          # what the engine's average read gives
    burnt = np.where(_truth()[::2, ::2] == 0, IGNORE, _truth()[::2, ::2] - 1)
    assert (coarse.label == burnt).mean() > 0.99
    fine = _read(raster, polys, pixel_size=0.2, **whole)
    assert fine.image.shape == (3, 640, 640) and fine.pixel_size_m == 0.2
    # roofs shifted 0.2 m east: burnt on the 0.2 m grid their west edge moves one 0.2 m pixel,
    # enlarged from the raster's 0.5 m grid it would not move at all
    shifted = LabelSource(str(write_polygons(tmp_path / "s.gpkg", epsg=32631, shift=0.2)),
                          field="kind")
    lab = _read(raster, shifted, pixel_size=0.2, **whole).label
    x, y, s, _ = ROOFS[0]
    row = lab[int((y + s / 2) * 2.5)]
    assert int(np.argmax(row != IGNORE)) == x * 2.5 + 1
    assert _read(raster, polys, pixel_size=0.503, **whole).label.shape == (256, 256)
    with pytest.raises(LabelError, match="over the 300 px limit"):
        _read(raster, polys, pixel_size=0.2, max_side=300, **whole)
    # a grid without a CRS has no pixel size in metres: the option is refused with the remedy
    img = np.stack([_truth().astype(np.uint8) * 80] * 3)
    plain = write_geotiff(tmp_path / "plain.tif", img, epsg=None)
    lab = write_geotiff(tmp_path / "plain_lab.tif", _truth(), epsg=None)
    assert _read(plain, LabelSource(str(lab))).pixel_size_m is None
    with pytest.raises(LabelError, match="leave the pixel size at 0"):
        _read(plain, LabelSource(str(lab)), pixel_size=1.0)


def test_scan_placed_by_gcps_is_read_where_qgis_draws_it(tmp_path):
    """A raster georeferenced by GCPs only (the labels were drawn over it in QGIS, which
    draws it warped onto a map grid): the training area is read on that grid, and the polygons
    land on their pixels as for a georeferenced copy."""
    from osgeo import gdal

    scene = gdal.Open(str(make_scene(tmp_path / "scene.tif")))
    gt = scene.GetGeoTransform()
    scan = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "scan.tif"), 256, 256, 3)
    for b in range(1, 4):
        scan.GetRasterBand(b).WriteArray(scene.GetRasterBand(b).ReadAsArray())
    scan.SetGCPs([gdal.GCP(gt[0] + c * gt[1], gt[3] + r * gt[5], 0, c, r)
                  for c, r in ((0, 0), (256, 0), (0, 256), (256, 256))], scene.GetProjection())
    scan = None
    polys = write_polygons(tmp_path / "p.gpkg", epsg=32631)
    area = _read(tmp_path / "scan.tif", LabelSource(str(polys), field="kind"),
                 extent=(500000, 4999872, 500128, 5000000))
    assert area.window == (0, 0, 256, 256)
    assert area.grid.geotransform == pytest.approx(gt)
    truth = _truth()
    assert (area.label == np.where(truth == 0, IGNORE, truth - 1)).mean() > 0.995
    assert area.pixel_size_m == pytest.approx(0.5, rel=1e-3)
