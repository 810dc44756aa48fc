"""``fctl:train`` and ``fctl:evaluate`` in headless QGIS on rasters and polygons made in the
test (polygons in EPSG:4326 over a UTM raster, a memory layer, a coarser label raster),
chained into ``fctl:segment``; cancellation and every bad input of issue 19."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (QgsFeature, QgsGeometry, QgsPointXY, QgsProcessingException,
                       QgsProcessingFeedback, QgsVectorLayer)

from plugin_fixtures import provider, tiny_model  # noqa: F401  (fixtures)
from train_fixtures import make_scene, roof_rings, write_label_raster, write_polygons

from model_core.training.finetune import CLASSIFIER_MAPPED

pytestmark = pytest.mark.slow

FAST = {"STEPS": 2, "PATCH_SIZE": 128, "DEVICE": 1}
WHOLE = "500000,500128,4999872,5000000 [EPSG:32631]"   # the scene's extent


def _run(alg: str, params: dict, feedback: QgsProcessingFeedback | None = None) -> dict:
    import processing

    return processing.run(alg, params, feedback=feedback or QgsProcessingFeedback())


def _memory_roofs(field: bool = False) -> QgsVectorLayer:
    """The roofs as a memory layer in EPSG:4326 (exported to a file by the algorithm)."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326" + ("&field=kind:string" if field else ""),
                           "buildings", "memory")
    feats = []
    for ring, kind in roof_rings(4326):
        f = QgsFeature(layer.fields())
        f.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(x, y) for x, y in ring]]))
        if field:
            f.setAttributes([kind])
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_train_segment_evaluate_with_polygons_in_another_crs(tmp_path, tiny_model, provider):
    from model_core.checkpoint import read_card

    raster = make_scene(tmp_path / "scene.tif")
    labels = _memory_roofs()
    out = tmp_path / "mine.safetensors"
    res = _run("fctl:train", {"INPUT": str(raster), "LABELS": labels, "BASE_MODEL": str(tiny_model),
                              **FAST, "EXTENT": WHOLE, "OUTPUT_MODEL": str(out),
                              "TRAINING_LOG": str(tmp_path / "log.csv"),
                              "TRAINING_PLOT": str(tmp_path / "log.png")})
    assert Path(res["OUTPUT_MODEL"]) == out and out.is_file()
    assert 0.0 <= res["VALIDATION_MIOU"] <= 1.0
    assert (tmp_path / "log.csv").read_text().startswith("epoch,step")
    assert (tmp_path / "log.png").stat().st_size > 1000
    card = read_card(out)
    assert [(c.id, c.name) for c in card.classes] == [(0, "background"), (1, "buildings")]
    assert card.config.num_classes == 2 and card.config.patch_size == 128
    assert card.gsd == pytest.approx(0.5, rel=1e-3) and card.bands == [1, 2, 3]
    assert card.scale == (0.0, 255.0)
    prov = card.provenance
    assert prov["steps"] == 2 and prov["classifier"] == CLASSIFIER_MAPPED
    assert set(prov["classifier_initialised_from"]) == {"background", "buildings"}
    assert prov["trained_on"]["raster"] == str(raster) and prov["val"]["pixels"] > 0
    assert prov["fine_tuned_from"]["name"] == "tiny test model"

    seg = _run("fctl:segment", {"INPUT": str(raster), "MODEL": str(out), "DEVICE": 1,
                                "OUTPUT_RASTER": str(tmp_path / "classes.tif")})
    classes = gdal.Open(seg["OUTPUT_RASTER"]).ReadAsArray()
    assert classes.shape == (256, 256) and set(np.unique(classes)) <= {0, 1}

    table = tmp_path / "scores.gpkg"
    ev = _run("fctl:evaluate", {"INPUT": str(raster), "LABELS": labels, "MODEL": str(out),
                                "DEVICE": 1, "OUTPUT_TABLE": str(table)})
    assert 0.0 <= ev["MIOU"] <= 1.0
    rows = list(QgsVectorLayer(ev["OUTPUT_TABLE"], "t", "ogr").getFeatures())
    assert [r["class_name"] for r in rows] == ["background", "buildings", "mean"]
    data = json.loads(Path(ev["OUTPUT_JSON"]).read_text())
    assert Path(ev["OUTPUT_JSON"]) == table.with_suffix(".json")
    assert data["miou"] == pytest.approx(ev["MIOU"]) and data["pixels"] > 0


def test_train_at_a_chosen_pixel_size_and_segment_there(tmp_path, tiny_model, provider):
    """PIXEL_SIZE 1 on a 0.5 m raster: trained on the area averaged to 1 m, the card says 1 m
    (the raster's 0.5 m kept in the provenance), and fctl:segment then reads imagery at 1 m."""
    from model_core.checkpoint import read_card

    raster = make_scene(tmp_path / "scene.tif")
    out = tmp_path / "at1m.safetensors"
    feedback = QgsProcessingFeedback()
    _run("fctl:train", {"INPUT": str(raster), "LABELS": _memory_roofs(),
                        "BASE_MODEL": str(tiny_model), **FAST, "PATCH_SIZE": 64,
                        "PIXEL_SIZE": 1.0, "EXTENT": WHOLE, "OUTPUT_MODEL": str(out)}, feedback)
    card = read_card(out)
    assert card.gsd == pytest.approx(1.0)
    trained_on = card.provenance["trained_on"]
    assert trained_on["pixel_size_m"] == pytest.approx(0.5, rel=1e-3)
    assert trained_on["training_pixel_size_m"] == pytest.approx(1.0)
    seg = _run("fctl:segment", {"INPUT": str(raster), "MODEL": str(out), "DEVICE": 1,
                                "OUTPUT_RASTER": str(tmp_path / "classes.tif")})
    ds = gdal.Open(seg["OUTPUT_RASTER"])
    assert (ds.RasterXSize, ds.RasterYSize) == (256, 256)       # back on the input's grid
    assert float(ds.GetMetadataItem("FCTL_PROCESSING_PIXEL_SIZE_M")) == pytest.approx(1.0)


def test_train_on_text_classes_and_on_a_coarser_label_raster(tmp_path, tiny_model, provider):
    from model_core.checkpoint import read_card

    raster = make_scene(tmp_path / "scene.tif")
    polys = write_polygons(tmp_path / "roofs.gpkg", epsg=3857)
    out = tmp_path / "kinds.safetensors"
    _run("fctl:train", {"INPUT": str(raster), "LABELS": str(polys), "CLASS_FIELD": "kind",
                        "BASE_MODEL": str(tiny_model), **FAST, "STEPS": 2,
                        "VALIDATION_FRACTION": 0.0, "OUTPUT_MODEL": str(out)})
    card = read_card(out)   # text names become classes in order of first appearance
    assert [(c.id, c.name) for c in card.classes] == [(0, "roof"), (1, "shed")]
    assert card.ignore_index == 255

    lab = write_label_raster(tmp_path / "labels.tif", factor=2)      # 1 m labels, 0.5 m raster
    out2 = tmp_path / "ids.safetensors"
    res = _run("fctl:train", {"INPUT": str(raster), "LABELS": str(lab),
                              "BASE_MODEL": str(tiny_model), **FAST, "STEPS": 2,
                              "VALIDATION_FRACTION": 0.0, "OUTPUT_MODEL": str(out2)})
    assert res["VALIDATION_MIOU"] is None
    card = read_card(out2)
    assert [c.id for c in card.classes] == [0, 1, 2] and card.config.num_classes == 3
    ev = _run("fctl:evaluate", {"INPUT": str(raster), "LABELS": str(lab), "MODEL": str(out2),
                                "DEVICE": 1, "OUTPUT_TABLE": "TEMPORARY_OUTPUT"})
    assert Path(ev["OUTPUT_JSON"]).is_file()


def test_cancelled_training_leaves_no_files(tmp_path, tiny_model, provider):
    raster = make_scene(tmp_path / "scene.tif")
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 5 else None)
    out = tmp_path / "never.safetensors"
    with pytest.raises(QgsProcessingException, match="cancelled"):
        _run("fctl:train", {"INPUT": str(raster), "LABELS": _memory_roofs(),
                            "BASE_MODEL": str(tiny_model), **FAST, "STEPS": 50,
                            "EXTENT": WHOLE,
                            "OUTPUT_MODEL": str(out), "TRAINING_LOG": str(tmp_path / "l.csv"),
                            "TRAINING_PLOT": str(tmp_path / "l.png")}, feedback)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


@pytest.mark.parametrize("case, message", [
    ("outside", "lies outside the raster"),
    ("empty", "no polygons"),
    ("one_value", "one value only"),
    ("bands", "takes 3 input bands"),
    ("no_field", "material"),
])
def test_bad_inputs_are_refused_with_a_remedy(tmp_path, tiny_model, provider, case, message):
    raster = make_scene(tmp_path / "scene.tif", bands=2 if case == "bands" else 3)
    if case == "outside":
        labels = write_polygons(tmp_path / "p.gpkg", shift=5000.0)
    elif case == "empty":
        labels = write_polygons(tmp_path / "p.gpkg", roofs=[])
    elif case == "one_value":
        labels = write_polygons(tmp_path / "p.gpkg", values=["roof"] * 5)
    else:
        labels = write_polygons(tmp_path / "p.gpkg")
    field = {"one_value": "kind", "no_field": "material"}.get(case)
    params = {"INPUT": str(raster), "LABELS": str(labels), "BASE_MODEL": str(tiny_model),
              **FAST, "OUTPUT_MODEL": str(tmp_path / "m.safetensors")}
    if field:
        params["CLASS_FIELD"] = field
    errors = []

    class Feedback(QgsProcessingFeedback):
        def reportError(self, error, fatalError=False):  # noqa: N802,N803
            errors.append(error)

    with pytest.raises(QgsProcessingException) as info:
        _run("fctl:train", params, Feedback())
    # Processing itself refuses a field the layer lacks (the reason goes to the feedback)
    assert message in " ".join([str(info.value), *errors])
    assert not (tmp_path / "m.safetensors").exists()
