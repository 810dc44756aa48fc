"""Metrics on a constructed prediction/label pair, and evaluation through the streaming engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_geotiff
from model_core.checkpoint import ClassInfo, ModelCard, save_checkpoint
from model_core.config import FCtLConfig
from model_core.training.metrics import Scores, confusion_matrix


def test_known_metrics_on_a_constructed_pair():
    # classes 0 (ignored), 1, 2, 3 on 10 pixels.
    label = np.array([0, 1, 1, 1, 1, 2, 2, 2, 3, 3])
    pred = np.array([2, 1, 1, 1, 2, 2, 2, 1, 0, 3])
    cm = confusion_matrix(label, pred, 4, ignore_index=0)
    assert cm.sum() == 9            # the ignored pixel is not counted
    s = Scores(cm, ignore_index=0, names={1: "a", 2: "b", 3: "c"})
    # class 1: tp 3, fp 1, fn 1 -> IoU 3/5, F1 6/8; class 2: tp 2, fp 1, fn 1 -> 2/4, 4/6;
    # class 3: tp 1, fp 0, fn 1 (predicted as the ignore class: still an error) -> 1/2, 2/3.
    assert s.iou == pytest.approx({1: 0.6, 2: 0.5, 3: 0.5})
    assert s.f1 == pytest.approx({1: 0.75, 2: 4 / 6, 3: 2 / 3})
    assert s.miou == pytest.approx((0.6 + 0.5 + 0.5) / 3)
    assert s.pixel_accuracy == pytest.approx(6 / 9)
    d = s.to_dict()
    assert set(d["iou"]) == {"a", "b", "c"} and d["pixels"] == 9
    assert "mean" in s.table() and "60.00" in s.table()


def test_absent_classes_are_left_out_of_the_mean():
    label = np.array([1, 1, 2, 2])
    s = Scores(confusion_matrix(label, label, 4, ignore_index=0), ignore_index=0)
    assert np.isnan(s.iou[3]) and s.miou == 1.0 and s.pixel_accuracy == 1.0


def test_confusion_checks_sizes_and_masks():
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 1]), 2,
                          valid=np.array([True, False, True]))
    assert cm.tolist() == [[1, 0], [0, 1]]


def _tiny_checkpoint(path, context: bool = True):
    kw = dict(backbone="mobilenetv3_small_050", num_classes=3, patch_size=64,
              decoder_channels=16, input_mean=(0.5,) * 3, input_std=(0.25,) * 3)
    config = FCtLConfig(**kw) if context else FCtLConfig.baseline(**kw)
    from model_core.models import FCtL
    torch.manual_seed(0)
    model = FCtL(config).eval()
    card = ModelCard(config, [ClassInfo(0, "void", (0, 0, 0)), ClassInfo(1, "dark", (0, 0, 255)),
                              ClassInfo(2, "bright", (255, 255, 0))], ignore_index=0, gsd=0.5)
    save_checkpoint(path, model, card)
    return model, card


@pytest.mark.slow
def test_evaluate_goes_through_the_engine(tmp_path):
    from osgeo import gdal

    from model_core.inference import SegmentOptions, segment
    from model_core.training.evaluate import EvalItem, evaluate, format_results

    ckpt = tmp_path / "m.safetensors"
    _tiny_checkpoint(ckpt)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (3, 100, 120)).astype(np.uint8)
    label = (img.mean(0) > 127).astype(np.uint8) + 1
    label[:5] = 0                                             # an ignored strip
    write_geotiff(tmp_path / "img.tif", img)
    res = evaluate(str(ckpt), [EvalItem("img", str(tmp_path / "img.tif"), label)],
                   tta_modes=(False, True), device="cpu")
    # The same run of the engine, scored by hand.
    segment(SegmentOptions(input=str(tmp_path / "img.tif"), output=str(tmp_path / "o.tif"),
                           model=str(ckpt), device="cpu"))
    pred = gdal.Open(str(tmp_path / "o.tif")).ReadAsArray()
    expect = Scores(confusion_matrix(label, pred, 3, 0), 0)
    assert res["no_tta"]["miou"] == pytest.approx(expect.miou)
    assert res["no_tta"]["pixel_accuracy"] == pytest.approx(expect.pixel_accuracy)
    assert res["no_tta"]["pixels"] == 100 * 120 - 5 * 120
    assert set(res) >= {"no_tta", "tta"} and set(res["tta"]["iou"]) == {"dark", "bright"}
    table = format_results(res)
    assert "no_tta IoU" in table and "tta IoU" in table
    json.dumps(res)
    # --shared-context reaches the engine
    shared = evaluate(str(ckpt), [EvalItem("img", str(tmp_path / "img.tif"), label)],
                      tta_modes=(False,), device="cpu", shared_context=True)
    segment(SegmentOptions(input=str(tmp_path / "img.tif"), output=str(tmp_path / "s.tif"),
                           model=str(ckpt), device="cpu", shared_context=True))
    ds = gdal.Open(str(tmp_path / "s.tif"))
    pred = ds.ReadAsArray()
    ds = None
    assert shared["no_tta"]["miou"] == pytest.approx(
        Scores(confusion_matrix(label, pred, 3, 0), 0).miou)


@pytest.mark.slow
def test_evaluate_cli_writes_json(tmp_path, capsys):
    from model_core.cli import main

    ckpt = tmp_path / "m.safetensors"
    _tiny_checkpoint(ckpt, context=False)
    img = np.random.default_rng(1).integers(0, 256, (3, 64, 64)).astype(np.uint8)
    write_geotiff(tmp_path / "img.tif", img)
    write_geotiff(tmp_path / "lab.tif", (img[0] > 127).astype(np.uint8) + 1)
    out = tmp_path / "scores.json"
    rc = main(["evaluate", "--model", str(ckpt), "--layout", "raster",
               "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
               "--tta", "off", "--device", "cpu", "--json", str(out), "--record", "test"])
    assert rc == 0
    d = json.loads(out.read_text())
    assert "tta" not in d and 0 <= d["no_tta"]["miou"] <= 1
    assert "pixel acc." in capsys.readouterr().out
    from model_core.checkpoint import read_card
    recorded = read_card(ckpt).provenance["test"]
    assert recorded["no_tta"]["miou"] == pytest.approx(d["no_tta"]["miou"])
    assert recorded["images"] == ["img"] and "confusion" not in recorded["no_tta"]


@pytest.mark.slow
def test_compare_trains_both_configs_identically(tmp_path, capsys):
    from model_core.checkpoint import read_card
    from model_core.cli import main

    img = np.random.default_rng(2).integers(0, 256, (3, 96, 96)).astype(np.uint8)
    write_geotiff(tmp_path / "img.tif", img)
    write_geotiff(tmp_path / "lab.tif", (img[1] > 127).astype(np.uint8) + 1)
    pair = ["--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif")]
    rc = main(["compare", "--layout", "raster", *pair,
               "--val-image", str(tmp_path / "img.tif"), "--val-labels", str(tmp_path / "lab.tif"),
               "--test-image", str(tmp_path / "img.tif"), "--test-labels", str(tmp_path / "lab.tif"),
               "--classes", "0:void:#000000,1:dark:#0000ff,2:bright:#ffff00", "--ignore-index", "0",
               "--backbone", "mobilenetv3_small_050", "--patch-size", "64",
               "--decoder-channels", "16", "--pretrained", "none", "--epochs", "1",
               "--steps-per-epoch", "2", "--batch-size", "2", "--accumulate", "1",
               "--tta", "off", "--device", "cpu", "--out", str(tmp_path / "cmp")])
    assert rc == 0
    res = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert set(res) == {"fctl", "fcn8s"}
    cards = {n: read_card(tmp_path / "cmp" / n / "best.safetensors") for n in res}
    assert cards["fcn8s"].config.is_baseline and not cards["fctl"].config.is_baseline
    t = {n: c.provenance["train"] for n, c in cards.items()}
    assert t["fctl"] == t["fcn8s"]                      # same recipe, seed and budget
    assert "mIoU" in capsys.readouterr().out


def test_labels_are_checked_against_the_models_classes(tmp_path, caplog):
    """A 0/255 building mask: read as classes 0 and 1 by a two-class model; against a model
    whose classes it does not hold (the bundled land-cover model), a clear error before any
    segmenting; stray values are logged and left unscored."""
    from model_core.checkpoint import ClassInfo, ModelCard
    from model_core.config import FCtLConfig
    from model_core.training.evaluate import EvalItem, scorable

    mask = np.zeros((20, 30), np.uint8)
    mask[5:9, 4:20] = 255
    item = [EvalItem("tile", "unused.tif", mask)]

    def card(k, ignore):
        return ModelCard(FCtLConfig(backbone="none", num_classes=k),
                         [ClassInfo(i, n, (0, 0, 0)) for i, n in enumerate(
                             ["background", "building", "c2", "c3", "c4", "c5", "c6"][:k])],
                         ignore_index=ignore)

    with caplog.at_level("INFO"):
        (binary,) = scorable(item, card(2, 255))
    assert set(np.unique(binary.label)) == {0, 1} and (binary.label == 1).sum() == 64
    assert "0/255 mask" in caplog.text
    with pytest.raises(ValueError, match=r"hold 0 \(536 px\), 255 \(64 px\); the model's classes "
                                         r"are 0 background, 1 building, 2 c2.*\(0 not scored\)"):
        scorable(item, card(7, 0))
    three = mask.copy()
    three[0] = 2
    three[1] = 9
    kept = scorable([EvalItem("t", "unused.tif", three)], card(3, None))
    assert (kept[0].label == three).all() and "label values [9, 255]" in caplog.text
