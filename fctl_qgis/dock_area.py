"""Where the dock segments: the chosen area (whole layer, visible map extent, or the features of a
polygon layer, also as a mask) and the window around a point clicked with the map tool, each
reprojected to the raster layer's CRS; a failed reprojection (QgsCsException) in words.

:class:`DockAreaMixin` is a part of :class:`~fctl_qgis.dock.FCtLDock`: it uses the dock's
widgets (``layer_combo``, ``area_combo``, ``polygon_combo``, ``selected_only``,
``click_button``, ``click_size``) and its ``run``/``_refuse``."""

from __future__ import annotations

from qgis.core import QgsCsException, QgsRectangle

from . import areas
from .i18n import tr

# the choices of the dock's "Area" combo box, in this order (see area_extent)
AREAS = ["Whole layer", "Visible map extent", "Features of a polygon layer"]


def reprojection_message(exc: Exception, layer) -> str:
    """A failed reprojection (QgsCsException) in words, with the remedy."""
    crs = (layer.crs().authid() or layer.crs().description()) if layer is not None else "?"
    return tr("the chosen area or point cannot be reprojected to the raster layer's CRS "
              "({crs}): it lies outside the region where that CRS is valid. Zoom to the raster "
              "layer, or click on it ({detail})").format(
                  crs=crs, detail=str(exc) or exc.__class__.__name__)


class DockAreaMixin:
    """The area of a run and the "click to segment" map tool."""

    # ------------------------------------------------------------------ area
    def _area_changed(self) -> None:
        features = self.area_combo.currentIndex() == 2
        self.polygon_combo.setEnabled(features)
        self.selected_only.setEnabled(features)

    def area_extent(self) -> QgsRectangle | None:
        """The chosen area in the raster layer's CRS (None = whole layer)."""
        layer = self.layer_combo.currentLayer()
        index = self.area_combo.currentIndex()
        if index == 0:
            return None
        if index == 1:
            canvas = self.iface.mapCanvas()
            rect = areas.to_layer_crs(canvas.extent(), canvas.mapSettings().destinationCrs(),
                                      layer)
            return areas.clip_to_layer(rect, layer)
        polygons = self.polygon_combo.currentLayer()
        if polygons is None:
            raise ValueError(tr("choose the polygon layer whose features to segment"))
        geom = areas.features_geometry(polygons, layer, self.selected_only.isChecked())
        return areas.clip_to_layer(geom.boundingBox(), layer)

    def _area_and_mask(self, extent: QgsRectangle | None, use_area: bool):
        """The extent of a run (``extent`` as given, else the chosen area when ``use_area``)
        and its mask: a temporary file of the chosen polygon features, or None. The caller
        removes the mask (:func:`fctl_qgis.masks.remove_mask`)."""
        from .masks import mask_from_layer

        mask = None
        if extent is None and use_area:
            extent = self.area_extent()
            if self.area_combo.currentIndex() == 2:   # the features themselves, not their box
                mask = mask_from_layer(self.polygon_combo.currentLayer(),
                                       self.selected_only.isChecked())
        return extent, mask

    # ------------------------------------------------------------------ map tool
    def _toggle_map_tool(self, on: bool) -> None:
        from .maptool import ClickSegmentTool

        canvas = self.iface.mapCanvas()
        if on:
            if self.map_tool is None:
                self.map_tool = ClickSegmentTool(canvas)
                self.map_tool.clicked.connect(self.segment_at)
                self.map_tool.deactivated.connect(self._map_tool_deactivated)
            canvas.setMapTool(self.map_tool)
        elif self.map_tool is not None and canvas.mapTool() is self.map_tool:
            canvas.unsetMapTool(self.map_tool)

    def _map_tool_deactivated(self) -> None:
        if not self._unloaded:
            self.click_button.setChecked(False)

    def _detach_map_tool(self) -> None:
        """Forget the map tool (at unload): its signals disconnected, off the canvas."""
        if self.map_tool is not None:
            tool, self.map_tool = self.map_tool, None
            for signal, slot in ((tool.clicked, self.segment_at),
                                 (tool.deactivated, self._map_tool_deactivated)):
                try:
                    signal.disconnect(slot)
                except (TypeError, RuntimeError):
                    pass
            canvas = self.iface.mapCanvas()
            if canvas.mapTool() is tool:
                canvas.unsetMapTool(tool)

    def segment_at(self, point) -> bool:
        """Segment a square window around ``point`` (canvas CRS)."""
        layer = self.layer_combo.currentLayer()
        if layer is None:
            return self._refuse(tr("choose a raster layer"))
        crs = self.iface.mapCanvas().mapSettings().destinationCrs()
        try:
            rect = areas.clip_to_layer(areas.window_around(point, crs, layer,
                                                           self.click_size.value()), layer)
        except QgsCsException as exc:
            return self._refuse(reprojection_message(exc, layer))
        except ValueError as exc:
            return self._refuse(str(exc))
        return self.run(rect)
