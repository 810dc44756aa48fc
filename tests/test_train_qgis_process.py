"""``qgis_process.bin`` runs a ``.model3`` graphical model, built in Python, that chains
``fctl:train`` into ``fctl:segment`` and ``fctl:evaluate`` (the trained model is the other two's
MODEL); and a real-imagery fine-tune (Inria, ../shared/data) that skips without that folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from plugin_fixtures import provider, tiny_model  # noqa: F401  (fixtures)
from plugin_fixtures import qgis_env, qgis_process
from train_fixtures import make_scene, write_polygons

from model_core.training.finetune import CLASSIFIER_MAPPED

pytestmark = pytest.mark.slow


def _child(alg: str, cid: str, sources: dict):
    from qgis.core import (QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource as Src)

    child = QgsProcessingModelChildAlgorithm(alg)
    child.setChildId(cid)
    for name, value in sources.items():
        if isinstance(value, tuple) and value[0] == "param":
            src = Src.fromModelParameter(value[1])
        elif isinstance(value, tuple) and value[0] == "child":
            src = Src.fromChildOutput(value[1], value[2])
        else:
            src = Src.fromStaticValue(value)
        child.addParameterSources(name, [src])
    return child


def _output(child, name: str, child_output: str) -> None:
    from qgis.core import QgsProcessingModelOutput

    out = QgsProcessingModelOutput(name, name)
    out.setChildOutputName(child_output)
    out.setChildId(child.childId())
    child.setModelOutputs({name: out})


def test_model3_chains_train_segment_evaluate(tmp_path, tiny_model, provider):
    from qgis.core import (QgsProcessing, QgsProcessingModelAlgorithm,
                           QgsProcessingModelParameter, QgsProcessingParameterFile,
                           QgsProcessingParameterMapLayer, QgsProcessingParameterRasterLayer)

    model = QgsProcessingModelAlgorithm("train_segment_evaluate", "fctl")
    for param in (QgsProcessingParameterRasterLayer("image", "Image"),
                  QgsProcessingParameterMapLayer("labels", "Labels",
                                                 types=[QgsProcessing.TypeVectorPolygon]),
                  QgsProcessingParameterFile("base", "Base model", extension="safetensors")):
        model.addModelParameter(param, QgsProcessingModelParameter(param.name()))
    train = _child("fctl:train", "train", {
        "INPUT": ("param", "image"), "LABELS": ("param", "labels"), "BASE_MODEL": ("param", "base"),
        "CLASS_FIELD": "kind", "STEPS": 2, "PATCH_SIZE": 128, "VALIDATION_FRACTION": 0.0,
        "DEVICE": 1})
    _output(train, "model", "OUTPUT_MODEL")
    model.addChildAlgorithm(train)
    seg = _child("fctl:segment", "segment", {
        "INPUT": ("param", "image"), "MODEL": ("child", "train", "OUTPUT_MODEL"), "DEVICE": 1})
    _output(seg, "classes", "OUTPUT_RASTER")
    model.addChildAlgorithm(seg)
    ev = _child("fctl:evaluate", "evaluate", {
        "INPUT": ("param", "image"), "LABELS": ("param", "labels"), "CLASS_FIELD": "kind",
        "MODEL": ("child", "train", "OUTPUT_MODEL"), "DEVICE": 1})
    _output(ev, "scores", "OUTPUT_TABLE")
    model.addChildAlgorithm(ev)
    path = tmp_path / "train_segment_evaluate.model3"
    assert model.toFile(str(path))

    raster = make_scene(tmp_path / "scene.tif")
    labels = write_polygons(tmp_path / "roofs.gpkg", epsg=4326)
    out_model, classes, scores = (tmp_path / "m.safetensors", tmp_path / "c.tif",
                                  tmp_path / "scores.gpkg")
    proc = qgis_process(["--json", "run", str(path), f"--image={raster}", f"--labels={labels}",
                         f"--base={tiny_model}", f"--train:model={out_model}",
                         f"--segment:classes={classes}", f"--evaluate:scores={scores}"],
                        qgis_env(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert Path(data["results"]["train:model"]) == out_model and out_model.is_file()
    arr = gdal.Open(str(classes)).ReadAsArray()
    assert arr.shape == (256, 256) and set(np.unique(arr)) <= {0, 1}
    assert scores.is_file() and scores.with_suffix(".json").is_file()
    assert json.loads(scores.with_suffix(".json").read_text())["pixels"] > 0


@pytest.mark.shared_data
def test_fine_tune_on_real_inria_imagery(tmp_path, shared_data):
    """A few steps on a crop of Inria Kitsap 11 (1.5 m RGB) with the 0.3 m building mask as a
    label raster in its own grid: the bundled model is fine-tuned into a building model."""
    from model_core.checkpoint import read_card
    from model_core.training.finetune import FineTuneOptions, fine_tune
    from model_core.training.gis import LabelSource
    from model_core.training.gis_evaluate import evaluate_labels

    inria = shared_data / "inria"
    if not (inria / "1000x1000" / "RGB.png").is_file():
        pytest.skip("the Inria tile is not in ../shared/data")
    gt_ds = gdal.Open(str(inria / "TIF_GT" / "kitsap11.tif"))
    gt = gt_ds.GetGeoTransform()
    rgb = gdal.Translate(str(tmp_path / "rgb.tif"), str(inria / "1000x1000" / "RGB.png"),
                         srcWin=(0, 0, 300, 300), outputSRS=gt_ds.GetProjection(),
                         outputBounds=(gt[0], gt[3], gt[0] + 300 * 5 * gt[1],
                                       gt[3] + 300 * 5 * gt[5]))
    rgb = None
    lab = (gt_ds.GetRasterBand(1).ReadAsArray(0, 0, 1500, 1500) > 127).astype(np.uint8)
    ds = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "lab.tif"), 1500, 1500, 1,
                                              gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    ds.SetProjection(gt_ds.GetProjection())
    ds.GetRasterBand(1).WriteArray(lab)
    ds.GetRasterBand(1).SetCategoryNames(["background", "building"])
    ds = None
    out = tmp_path / "buildings.safetensors"
    res = fine_tune(FineTuneOptions(str(tmp_path / "rgb.tif"), LabelSource(str(tmp_path /
                                                                              "lab.tif")),
                                    str(out), steps=2, patch_size=128, device="cpu",
                                    validation_fraction=0.0, threads=1))
    card = read_card(out)
    assert [c.name for c in card.classes] == ["background", "building"]
    assert card.gsd == pytest.approx(1.5, rel=0.01) and res.classifier == CLASSIFIER_MAPPED
    # the new "building" class starts as the land-cover model's "urban"
    assert card.provenance["classifier_initialised_from"]["building"]["from"] == "urban"
    ev = evaluate_labels(str(tmp_path / "rgb.tif"), LabelSource(str(tmp_path / "lab.tif")),
                         str(out), device="cpu")
    assert ev.scores.confusion.sum() == 300 * 300 and 0.0 <= ev.scores.miou <= 1.0
