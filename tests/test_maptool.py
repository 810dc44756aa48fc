"""The "click to segment" map tool driven by real mouse events on a map canvas: a
QgsMapMouseEvent handed to the active map tool, and a QTest click on the canvas viewport. Each
left click makes the dock segment the window of the chosen size around the clicked point."""

from __future__ import annotations

import time

import pytest
from osgeo import gdal
from qgis.core import QgsPointXY, QgsProject, QgsRasterLayer, QgsSettings
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt
from qgis.PyQt.QtTest import QTest

from plugin_fixtures import make_rgb, tiny_model  # noqa: F401 - fixture

pytestmark = pytest.mark.slow
WINDOW = 96          # px of the layer around a click


@pytest.fixture
def setup(qgis_iface, tiny_model, tmp_path):  # noqa: F811
    from fctl_qgis.dock import FCtLDock

    QgsSettings().remove("fctl")
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().layerTreeRoot().removeAllChildren()
    path = make_rgb(tmp_path / "scene.tif", size=300)     # 150 m x 150 m at 0.5 m
    layer = QgsRasterLayer(str(path), "scene", "gdal")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    canvas = qgis_iface.mapCanvas()
    window = canvas.window()           # the canvas's main window, shown (offscreen platform)
    window.show()
    window.resize(500, 500)
    canvas.resize(400, 400)
    QCoreApplication.processEvents()
    canvas.setDestinationCrs(layer.crs())
    canvas.setLayers([layer])
    canvas.setExtent(layer.extent())
    QCoreApplication.processEvents()
    dock = FCtLDock(qgis_iface)
    dock.model_widget.setFilePath(str(tiny_model))
    dock.output_widget.setFilePath(str(tmp_path / "results"))
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    dock.vector_check.setChecked(False)
    dock.layer_combo.setLayer(layer)
    dock.click_size.setValue(WINDOW)
    dock.click_button.setChecked(True)           # the map tool becomes the canvas's tool
    yield dock, canvas, layer
    dock.unload()
    dock.deleteLater()
    window.hide()
    QgsSettings().remove("fctl")
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().layerTreeRoot().removeAllChildren()


def _wait(dock, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while dock.task is not None and time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert dock.task is None, "the segmentation did not finish in time"
    return dock.last_outcome


def _expected_window(layer, point: QgsPointXY) -> tuple[float, float, float, float]:
    half = WINDOW * layer.rasterUnitsPerPixelX() / 2
    e = layer.extent()
    return (max(point.x() - half, e.xMinimum()), max(point.y() - half, e.yMinimum()),
            min(point.x() + half, e.xMaximum()), min(point.y() + half, e.yMaximum()))


def _check_run(dock, layer, point: QgsPointXY) -> None:
    assert dock.task is not None, dock.status.text()
    assert dock.task.options.extent == pytest.approx(_expected_window(layer, point), abs=1e-6)
    outcome = _wait(dock)
    assert outcome.ok, outcome.error
    ds = gdal.Open(outcome.result.output)
    x0, y0, x1, y1 = _expected_window(layer, point)
    px = layer.rasterUnitsPerPixelX()
    assert (ds.RasterXSize, ds.RasterYSize) == pytest.approx(((x1 - x0) / px, (y1 - y0) / px),
                                                             abs=2)
    gt = ds.GetGeoTransform()
    assert gt[0] == pytest.approx(x0, abs=1.0) and gt[3] == pytest.approx(y1, abs=1.0)


def test_map_mouse_event_segments_window_around_click(setup):
    from fctl_qgis.maptool import ClickSegmentTool

    dock, canvas, layer = setup
    tool = canvas.mapTool()
    assert isinstance(tool, ClickSegmentTool)
    pixel = QPoint(150, 220)
    point = canvas.getCoordinateTransform().toMapCoordinates(pixel.x(), pixel.y())
    assert layer.extent().contains(point), canvas.extent().toString()
    # a right click segments nothing
    right = QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, pixel,
                             Qt.MouseButton.RightButton, Qt.MouseButton.NoButton,
                             Qt.KeyboardModifier.NoModifier)
    tool.canvasReleaseEvent(right)
    assert dock.task is None
    press = QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonPress, pixel,
                             Qt.MouseButton.LeftButton, Qt.MouseButton.LeftButton,
                             Qt.KeyboardModifier.NoModifier)
    release = QgsMapMouseEvent(canvas, QEvent.Type.MouseButtonRelease, pixel,
                               Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton,
                               Qt.KeyboardModifier.NoModifier)
    tool.canvasPressEvent(press)
    tool.canvasReleaseEvent(release)
    x0, y0, x1, y1 = _expected_window(layer, point)     # well inside: the whole window
    assert (x1 - x0, y1 - y0) == pytest.approx((WINDOW * 0.5, WINDOW * 0.5))
    _check_run(dock, layer, point)


def test_click_on_canvas_viewport(setup):
    dock, canvas, layer = setup
    pixel = QPoint(380, 30)                   # near the top-right corner: the window is clipped
    point = canvas.getCoordinateTransform().toMapCoordinates(pixel.x(), pixel.y())
    QTest.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, pixel)
    _check_run(dock, layer, point)
    # switching the tool off: clicks no longer segment
    dock.click_button.setChecked(False)
    assert canvas.mapTool() is None or canvas.mapTool() is not dock.map_tool
    QTest.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, QPoint(200, 200))
    assert dock.task is None


def test_click_outside_the_raster_is_refused(setup):
    dock, canvas, layer = setup
    canvas.setExtent(layer.extent().buffered(400))          # much room around the raster
    QCoreApplication.processEvents()
    QTest.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.NoModifier, QPoint(5, 5))
    assert dock.task is None
    assert "does not overlap" in dock.status.text()
