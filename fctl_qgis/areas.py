"""Where the dock segments: the whole layer, the visible map extent, polygon features or a window
around a clicked point, each turned into an extent in the raster layer's CRS."""

from __future__ import annotations

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsGeometry,
                       QgsPointXY, QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorLayer)


def to_layer_crs(rect: QgsRectangle, crs: QgsCoordinateReferenceSystem, layer: QgsRasterLayer,
                 project: QgsProject | None = None) -> QgsRectangle:
    if not crs.isValid() or crs == layer.crs():
        return QgsRectangle(rect)
    xform = QgsCoordinateTransform(crs, layer.crs(), project or QgsProject.instance())
    return xform.transformBoundingBox(rect)


def clip_to_layer(rect: QgsRectangle, layer: QgsRasterLayer) -> QgsRectangle:
    """``rect`` within the layer's extent; raises when they do not overlap."""
    out = rect.intersect(layer.extent())
    if out.isEmpty():
        raise ValueError("the chosen area does not overlap the raster layer: pan to the layer or "
                         "choose another area")
    return out


def features_geometry(layer: QgsVectorLayer, target: QgsRasterLayer,
                      selected_only: bool = True) -> QgsGeometry:
    """Union of the layer's (selected, else all) polygons in ``target``'s CRS."""
    feats = layer.selectedFeatures() if selected_only and layer.selectedFeatureCount() else \
        list(layer.getFeatures())
    geoms = [f.geometry() for f in feats if f.hasGeometry()]
    if not geoms:
        raise ValueError(f"the layer {layer.name()!r} has no polygon to segment")
    geom = QgsGeometry.unaryUnion(geoms)
    if layer.crs() != target.crs():
        geom.transform(QgsCoordinateTransform(layer.crs(), target.crs(), QgsProject.instance()))
    return geom


def window_around(point: QgsPointXY, crs: QgsCoordinateReferenceSystem, layer: QgsRasterLayer,
                  size_px: int) -> QgsRectangle:
    """A square of ``size_px`` layer pixels centred on ``point`` (given in ``crs``)."""
    if crs.isValid() and crs != layer.crs():
        point = QgsCoordinateTransform(crs, layer.crs(), QgsProject.instance()).transform(point)
    if layer.width() > 0:
        px, py = layer.rasterUnitsPerPixelX(), layer.rasterUnitsPerPixelY()
    else:  # web layers (XYZ/WMS): the finest native resolution
        res = [r for r in (layer.dataProvider().nativeResolutions() or []) if r > 0]
        px = py = min(res) if res else layer.extent().width() / 1024.0
    half_w, half_h = size_px * px / 2, size_px * py / 2
    return QgsRectangle(point.x() - half_w, point.y() - half_h,
                        point.x() + half_w, point.y() + half_h)
