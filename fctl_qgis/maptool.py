"""The "click to segment" map tool: each click asks the dock to segment a window around it."""

from __future__ import annotations

from qgis.core import QgsPointXY
from qgis.gui import QgsMapCanvas, QgsMapMouseEvent, QgsMapToolEmitPoint
from qgis.PyQt.QtCore import Qt, pyqtSignal


class ClickSegmentTool(QgsMapToolEmitPoint):
    """Emits ``clicked(point)`` with the clicked point in the canvas CRS."""

    clicked = pyqtSignal(QgsPointXY)

    def __init__(self, canvas: QgsMapCanvas) -> None:
        super().__init__(canvas)
        self.setCursor(Qt.CursorShape.CrossCursor)

    def canvasReleaseEvent(self, event: QgsMapMouseEvent) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self.clicked.emit(self.toMapCoordinates(event.pos()))
