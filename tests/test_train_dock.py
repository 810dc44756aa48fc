"""The dock's "Train on this layer" section in headless QGIS: it runs fctl:train in a QgsTask
on the dock's raster and labels layers, then selects the new model and shows its legend; a
missing labels layer is refused in the status line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication

from plugin_fixtures import open_dock, provider, tiny_model  # noqa: F401  (fixtures)
from train_fixtures import make_scene, write_polygons

pytestmark = pytest.mark.slow


@pytest.fixture
def dock(qgis_iface, tiny_model, provider, tmp_path):
    with open_dock(qgis_iface, tiny_model, tmp_path / "results") as d:
        yield d


def test_train_section_trains_and_selects_the_new_model(dock, tmp_path):
    raster = QgsRasterLayer(str(make_scene(tmp_path / "scene.tif")), "scene", "gdal")
    labels = QgsVectorLayer(str(write_polygons(tmp_path / "roofs.gpkg", epsg=4326)) +
                            "|layername=roofs", "roofs", "ogr")
    assert raster.isValid() and labels.isValid()
    QgsProject.instance().addMapLayers([raster, labels])
    dock.layer_combo.setLayer(raster)
    section = dock.train_section
    section.labels_combo.setLayer(None)
    assert section.start() is False and "labels layer" in section.status.text()
    section.labels_combo.setLayer(labels)
    section.field_combo.setField("kind")
    section.steps_spin.setValue(2)
    assert section.start(), section.status.text()
    end = time.monotonic() + 600
    while section.task is not None and time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.05)
    assert section.task is None, "the training task did not finish in time"
    assert section.last_ok, section.status.text()
    model = Path(section.last_results["OUTPUT_MODEL"])
    assert model.is_file() and model.parent == tmp_path / "results"
    assert model.with_suffix(".csv").is_file() and model.with_suffix(".png").is_file()
    assert dock.model_path() == str(model)
    legend = [dock.legend_list.item(i).text() for i in range(dock.legend_list.count())]
    assert legend == ["0  roof", "1  shed"]
