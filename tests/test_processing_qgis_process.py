"""``qgis_process.bin`` headless: ``fctl:segment`` with JSON results, and a ``.model3`` graphical
model, built in Python, chaining ``fctl:segment`` into ``native:dissolve``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import QgsVectorLayer

from plugin_fixtures import provider, tiny_model  # noqa: F401  (fixtures)
from plugin_fixtures import make_rgb, qgis_env, qgis_process


pytestmark = pytest.mark.slow


def test_qgis_process_runs_segment_with_json(tmp_path, tiny_model):
    raster = make_rgb(tmp_path / "in.tif", size=160)
    out_r, out_v = tmp_path / "c.tif", tmp_path / "p.gpkg"
    proc = qgis_process(["--json", "run", "fctl:segment", f"--INPUT={raster}",
                         f"--MODEL={tiny_model}", "--DEVICE=1", f"--OUTPUT_RASTER={out_r}",
                         f"--OUTPUT_VECTOR={out_v}",
                         "--SHARED_CONTEXT=true"],   # former parameter: accepted, ignored
                        qgis_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert data["results"]["OUTPUT_RASTER"] == str(out_r)
    assert data["results"]["OUTPUT_VECTOR"] == str(out_v)
    assert data["results"]["PATCHES"] == 4
    assert out_r.is_file() and out_v.is_file()
    assert gdal.Open(str(out_r)).RasterXSize == 160


def test_model3_chains_segment_with_native_algorithm(tmp_path, tiny_model, provider):
    from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource, QgsProcessingModelOutput,
                           QgsProcessingModelParameter, QgsProcessingParameterFile,
                           QgsProcessingParameterRasterLayer)

    model = QgsProcessingModelAlgorithm("segment_and_fix", "fctl")
    model.addModelParameter(QgsProcessingParameterRasterLayer("image", "Image"),
                            QgsProcessingModelParameter("image"))
    model.addModelParameter(QgsProcessingParameterFile("checkpoint", "Checkpoint",
                                                       extension="safetensors"),
                            QgsProcessingModelParameter("checkpoint"))
    seg = QgsProcessingModelChildAlgorithm("fctl:segment")
    seg.setChildId("segment")
    seg.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("image")])
    seg.addParameterSources("MODEL", [QgsProcessingModelChildParameterSource.fromModelParameter("checkpoint")])
    seg.addParameterSources("DEVICE", [QgsProcessingModelChildParameterSource.fromStaticValue(1)])
    seg.addParameterSources("OUTPUT_VECTOR", [QgsProcessingModelChildParameterSource.fromStaticValue(
        "TEMPORARY_OUTPUT")])
    seg.addParameterSources("OUTPUT_RASTER", [QgsProcessingModelChildParameterSource.fromStaticValue(
        "TEMPORARY_OUTPUT")])
    model.addChildAlgorithm(seg)
    fix = QgsProcessingModelChildAlgorithm("native:dissolve")
    fix.setChildId("dissolve")
    fix.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromChildOutput(
        "segment", "OUTPUT_VECTOR")])
    fix.addParameterSources("FIELD", [QgsProcessingModelChildParameterSource.fromStaticValue(
        ["class_id"])])
    out = QgsProcessingModelOutput("classes", "Classes dissolved")
    out.setChildOutputName("OUTPUT")
    out.setChildId("dissolve")
    fix.setModelOutputs({"classes": out})
    model.addChildAlgorithm(fix)
    path = tmp_path / "segment_and_dissolve.model3"
    assert model.toFile(str(path))

    raster = make_rgb(tmp_path / "in.tif", size=140)
    result = tmp_path / "dissolved.gpkg"
    proc = qgis_process(["--json", "run", str(path), f"--image={raster}",
                         f"--checkpoint={tiny_model}", f"--dissolve:classes={result}"],
                        qgis_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert Path(data["results"]["dissolve:classes"]) == result
    vec = QgsVectorLayer(str(result), "d", "ogr")
    ids = [f["class_id"] for f in vec.getFeatures()]
    assert vec.isValid() and len(ids) == len(set(ids)) >= 1   # one multipolygon per class
    assert vec.crs().authid() == "EPSG:32631"
