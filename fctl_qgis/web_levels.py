"""The reading resolutions the dock offers for layers without a native pixel size (XYZ and WMS
layers): their zoom levels / native resolutions as pixel sizes in metres on the ground, which the
dock copies into the processing pixel size (at which such layers are fetched)."""

from __future__ import annotations

import math

from qgis.core import QgsMapLayer, QgsRasterInterface, QgsRasterLayer, QgsRectangle

from .i18n import tr

WEB_MERCATOR_Z0 = 156543.03392804097   # EPSG:3857 units per pixel of zoom level 0 (256 px tiles)


def has_native_pixel_size(layer: QgsMapLayer | None) -> bool:
    """Whether a raster layer has a pixel grid of its own (files, WCS, PostGIS rasters)."""
    if not isinstance(layer, QgsRasterLayer) or layer.dataProvider() is None:
        return True
    provider = layer.dataProvider()
    return bool(provider.capabilities() & QgsRasterInterface.Capability.Size) \
        and provider.xSize() > 0


def reading_levels(layer: QgsMapLayer | None) -> list[tuple[str, float]]:
    """(label, metres per pixel) of each native resolution of a layer without a native pixel
    size, finest first; [] for other layers (or resolutions whose ground size is unknown)."""
    from .qgis_reader import _ground_m

    if has_native_pixel_size(layer):
        return []
    provider = layer.dataProvider()
    res = sorted(r for r in (provider.nativeResolutions() or []) if r > 0)
    mercator = layer.crs().authid() == "EPSG:3857"
    centre = _centre(layer.extent())
    levels = []
    for r in res:
        metres = _ground_m(provider, centre, r)
        if not metres:
            continue
        text = tr("{m:.3g} m per pixel").format(m=metres)
        if mercator:
            zoom = round(math.log2(WEB_MERCATOR_Z0 / r))
            text = tr("zoom {z} ({m:.3g} m per pixel)").format(z=zoom, m=metres)
        levels.append((text, float(f"{metres:.4g}")))
    return levels


def _centre(extent: QgsRectangle) -> QgsRectangle:
    """A small rectangle at the centre of ``extent``: the ground size is measured there."""
    c = extent.center()
    half = max(extent.width(), extent.height()) * 1e-3 or 1.0
    return QgsRectangle(c.x() - half, c.y() - half, c.x() + half, c.y() + half)
