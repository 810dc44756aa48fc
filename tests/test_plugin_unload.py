"""Unloading the plugin while a segmentation runs in its QgsTask: the run is cancelled and waited
for, no signal reaches the deleted dock (no "wrapped C/C++ object has been deleted"), nothing is
left in the output folder, and the message-log handler is removed."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication, QEvent

from plugin_fixtures import make_rgb, tiny_model  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def _spin(seconds: float, until=lambda: False) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and not until():
        QCoreApplication.processEvents()
        # processEvents() outside an event loop leaves deleteLater() pending: run those too,
        # as QGIS's event loop would (the dock's C++ object is then really gone)
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        time.sleep(0.01)


@pytest.fixture
def captured(monkeypatch):
    """Exceptions reaching sys.excepthook (PyQt's slots/virtuals) and the QGIS message log."""
    errors: list = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: errors.append(exc))
    messages: list[tuple[str, str, object]] = []

    def received(message: str, tag: str, level) -> None:
        messages.append((message, tag, level))

    QgsApplication.messageLog().messageReceived.connect(received)
    yield errors, messages
    QgsApplication.messageLog().messageReceived.disconnect(received)


def test_unload_during_run(qgis_iface, tiny_model, tmp_path, captured):  # noqa: F811
    from qgis.core import QgsSettings

    from fctl_qgis.plugin import FCtLPlugin

    errors, messages = captured
    QgsSettings().remove("fctl")
    QgsProject.instance().removeAllMapLayers()
    raster = make_rgb(tmp_path / "big.tif", size=900)
    layer = QgsRasterLayer(str(raster), "big", "gdal")
    QgsProject.instance().addMapLayer(layer)
    out = tmp_path / "results"

    plugin = FCtLPlugin(qgis_iface)
    plugin.initGui()
    plugin.show_dock(True)
    dock = plugin.dock
    dock.model_widget.setFilePath(str(tiny_model))
    dock.output_widget.setFilePath(str(out))
    dock.device_combo.setCurrentIndex(dock.device_combo.findData("cpu"))
    dock.batch_spin.setValue(1)
    dock.layer_combo.setLayer(layer)
    assert dock.run(), dock.status.text()
    task = dock.task
    _spin(60, lambda: task.progress() > 0)           # inside the engine, between batches
    assert task.progress() > 0, "the run did not start"
    manager = QgsApplication.taskManager()
    assert manager.countActiveTasks() >= 1

    plugin.unload()
    assert plugin.dock is None
    # unload returned after the engine stopped and removed its partial files
    assert not out.exists() or sorted(out.iterdir()) == []
    _spin(3)                       # deleteLater of the dock, the task's queued finished()
    # unload waited for the task's worker: nothing of the run is left running
    assert manager.countActiveTasks() == 0
    assert errors == [], "".join(str(e[1]) for e in errors)
    assert not out.exists() or sorted(out.iterdir()) == []
    assert QgsProject.instance().layerTreeRoot().findGroup("FCtL results") is None
    assert not [m for m in messages if m[1] == "FCtL" and m[2] == Qgis.MessageLevel.Critical]
    # the plugin's log handler is gone with it
    from fctl_qgis.log import MessageLogHandler

    for name in ("model_core", "fctl_qgis"):
        assert not [h for h in logging.getLogger(name).handlers
                    if isinstance(h, MessageLogHandler)]
    QgsProject.instance().removeAllMapLayers()


def test_unload_twice_and_without_dock(qgis_iface):
    from fctl_qgis.plugin import FCtLPlugin

    plugin = FCtLPlugin(qgis_iface)
    plugin.initGui()
    plugin.unload()
    plugin.unload()                # QGIS may call unload on a plugin that failed half-way
    assert plugin.action is None and plugin.dock is None
