"""The dock panel headless: model legend, a run in a QgsTask that adds styled results to the
project in a group, the area choices, the click-to-segment tool, and cancelling."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import (QgsFeature, QgsGeometry, QgsPointXY, QgsProject,
                       QgsRasterLayer, QgsRectangle, QgsVectorLayer)
from qgis.PyQt.QtCore import QCoreApplication

from plugin_fixtures import CLASSES, make_rgb, make_tiny_model, open_dock

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture
def dock(qgis_iface, tiny_model, tmp_path):
    with open_dock(qgis_iface, tiny_model, tmp_path / "results") as d:
        yield d


def _add_raster(path: Path) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), path.stem, "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _wait(dock, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while dock.task is not None and time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert dock.task is None, "the segmentation task did not finish in time"
    return dock.last_outcome


def test_model_legend_shown(dock):
    assert dock.legend_list.count() == 7
    assert dock.legend_list.item(4).text() == "4  water"
    assert "tiny test model" in dock.model_label.text()
    dock.model_widget.setFilePath("/nonexistent/model.safetensors")
    assert dock.legend_list.count() == 0 and "does not exist" in dock.model_label.text()


def test_run_adds_styled_results_in_a_group(dock, tmp_path):
    layer = _add_raster(make_rgb(tmp_path / "scene.tif", size=180))
    dock.layer_combo.setLayer(layer)
    assert dock.batch_spin.value() == 0 and dock.batch_spin.text() == "auto"
    exact = dock.run_options["exact_context"]       # the shared context is the default
    assert not exact.isChecked()
    assert dock.run()
    assert dock.task.options.shared_context and dock.task.options.batch_size == 0
    assert not dock.run_button.isEnabled() and dock.cancel_button.isEnabled()
    outcome = _wait(dock)
    assert outcome.ok, outcome.error
    group = QgsProject.instance().layerTreeRoot().findGroup("FCtL results")
    assert group is not None
    assert [n.name() for n in group.findLayers()] == ["scene polygons", "scene classes"]
    kinds = {type(n.layer()).__name__: n.layer() for n in group.findLayers()}
    assert set(kinds) == {"QgsRasterLayer", "QgsVectorLayer"}
    ras = kinds["QgsRasterLayer"]
    assert ras.renderer().type() == "paletted"
    assert [c.label for c in ras.renderer().classes()] == [n for n, _ in CLASSES]
    assert ras.width() == 180 and ras.crs().authid() == "EPSG:32631"
    assert kinds["QgsVectorLayer"].renderer().type() == "categorizedSymbol"
    assert dock.progress.value() == 100 and "Done in" in dock.status.text()
    assert dock.run_button.isEnabled() and not dock.cancel_button.isEnabled()
    # the paper's per-patch contexts, and the advanced options reaching the engine
    exact.setChecked(True)
    dock.run_options["min_overlap"].setValue(40)
    dock.run_options["bands"].setText("3 2 1")
    dock.run_options["min_area"].setValue(25.0)
    assert dock.run()
    opts = dock.task.options
    assert not opts.shared_context and opts.min_overlap == 40 and opts.bands == [3, 2, 1]
    assert opts.min_area == 25.0 and opts.min_area_unit == "m2"   # square metres by default
    assert _wait(dock).ok, dock.last_outcome.error


def test_visible_extent_and_click_and_features(dock, qgis_iface, tmp_path):
    layer = _add_raster(make_rgb(tmp_path / "scene.tif", size=400))   # 200 m x 200 m
    dock.layer_combo.setLayer(layer)
    dock.vector_check.setChecked(False)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(QgsRectangle(500040, 4999940, 500080, 4999980))
    visible = canvas.extent().intersect(layer.extent())     # the canvas keeps its aspect ratio
    assert 0 < visible.width() < 200 and 0 < visible.height() < 200
    dock.area_combo.setCurrentIndex(1)                  # visible map extent
    rect = dock.area_extent()
    assert rect.toString(3) == visible.toString(3)
    assert dock.run() and _wait(dock).ok
    ds = gdal.Open(dock.last_outcome.result.output)
    assert ds.RasterXSize == pytest.approx(visible.width() / 0.5, abs=2)
    assert ds.RasterYSize == pytest.approx(visible.height() / 0.5, abs=2)

    dock.click_size.setValue(128)                       # click-to-segment: 128 px window
    assert dock.segment_at(QgsPointXY(500100, 4999900)) and _wait(dock).ok
    ds = gdal.Open(dock.last_outcome.result.output)
    assert (ds.RasterXSize, ds.RasterYSize) == pytest.approx((128, 128), abs=2)
    assert not dock.segment_at(QgsPointXY(0, 0))        # outside the raster: refused
    assert "does not overlap" in dock.status.text()

    polys = QgsVectorLayer("Polygon?crs=EPSG:32631", "fields", "memory")
    f = QgsFeature()
    f.setGeometry(QgsGeometry.fromRect(QgsRectangle(500150, 4999850, 500190, 4999890)))
    polys.dataProvider().addFeatures([f])
    QgsProject.instance().addMapLayer(polys)
    dock.area_combo.setCurrentIndex(2)
    dock.polygon_combo.setLayer(polys)
    assert dock.run() and _wait(dock).ok
    ds = gdal.Open(dock.last_outcome.result.output)
    assert (ds.RasterXSize, ds.RasterYSize) == pytest.approx((80, 80), abs=2)


def test_cancel_stops_and_leaves_no_output(dock, tmp_path):
    layer = _add_raster(make_rgb(tmp_path / "big.tif", size=700))
    dock.layer_combo.setLayer(layer)
    dock.batch_spin.setValue(1)
    assert dock.run()
    task = dock.task
    end = time.monotonic() + 60
    while task.progress() <= 0 and time.monotonic() < end:   # let it start a batch
        QCoreApplication.processEvents()
        time.sleep(0.01)
    dock.cancel()
    outcome = _wait(dock)
    assert not outcome.ok and outcome.cancelled
    assert "Cancelled" in dock.status.text()
    results = tmp_path / "results"
    assert not results.exists() or list(results.iterdir()) == []
    assert QgsProject.instance().layerTreeRoot().findGroup("FCtL results") is None


def test_missing_raster_layer_is_reported(dock):
    dock.layer_combo.setLayer(None)
    assert not dock.run()
    assert "choose a raster layer" in dock.status.text()
