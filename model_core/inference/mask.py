"""Polygon masks: segment only inside polygons (``SegmentOptions.mask``).

The polygons (any vector file OGR reads, any CRS) are reprojected once to the raster's CRS
(traditional GIS axis order) into an in-memory layer. The processed window shrinks to their
bounding box (intersected with the raster and any extent). Patches whose part of the window holds
no mask pixel are not run: a coarse rasterisation of the window (``ALL_TOUCHED``, at most
:data:`COARSE_MAX` cells a side) rules most of them out, each remaining patch's window is then
rasterised at full resolution. Skipped patches still count toward the merge's cells (their cells
lie outside the mask, so they are nodata whatever their logits). Pixels outside the polygons
(pixel centre outside, GDAL's rasterisation rule) become nodata in the merge, after the network
ran on unmasked inputs: labels inside the mask are those of an unmasked run, contexts still come
from the whole raster. Rasterisations are per window (at most one patch, or the coarse grid), so
memory stays bounded whatever the raster's size.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..geometry import Window
from ..ground import srs_of
from .plan import Patch, Plan, PixelWindow, resolve_window, window_geotransform

log = logging.getLogger(__name__)

COARSE_MAX = 2048      # cells a side of the coarse rasterisation used to rule patches out


class PolygonMask:
    """The polygons of ``path`` (layer ``layer_name``) on a raster's pixel grid.

    Args:
        path: a vector file OGR opens (GeoPackage, Shapefile, GeoJSON, ...).
        layer_name: its layer; None = its only layer.
        crs_wkt: the raster's CRS ('' = none: the polygons are taken as they are).
        geotransform: the raster's (processing grid's) geotransform.
        raster_size: (width, height) of that grid.

    Raises:
        FileNotFoundError, ValueError: with the problem and the remedy.
    """

    def __init__(self, path: str, layer_name: str | None, crs_wkt: str,
                 geotransform: Sequence[float], raster_size: tuple[int, int]) -> None:
        from osgeo import ogr

        self.path = str(path)
        self.gt = tuple(float(v) for v in geotransform)
        self.raster_size = (int(raster_size[0]), int(raster_size[1]))
        self.crs_wkt = crs_wkt or ""
        if not Path(self.path).exists() and not self.path.startswith("/vsi"):
            raise FileNotFoundError(f"the mask {self.path} does not exist: give a polygon file "
                                    "(GeoPackage, Shapefile, GeoJSON, ...)")
        src = ogr.Open(self.path)
        if src is None:
            raise ValueError(f"the mask {self.path} is not a vector file OGR can read: give a "
                             "polygon layer (GeoPackage, Shapefile, GeoJSON, ...)")
        layer = _pick_layer(src, layer_name, self.path)
        self._ds = ogr.GetDriverByName("Memory").CreateDataSource("fctl_mask")
        self._layer = self._ds.CreateLayer("mask", srs_of(self.crs_wkt), ogr.wkbUnknown)
        self.count = _copy_polygons(layer, self._layer, self.crs_wkt, self.path)
        src = None
        xmin, xmax, ymin, ymax = self._layer.GetExtent()
        self.bounds = (xmin, ymin, xmax, ymax)
        log.info("mask: %d polygon(s) of %s, bounds %s in the raster's CRS", self.count,
                 self.path, tuple(round(b, 3) for b in self.bounds))

    # ------------------------------------------------------------------ window
    def clip(self, window: PixelWindow) -> PixelWindow:
        """``window`` cut to the pixels the polygons' bounding box touches."""
        try:
            mx, my, mw, mh = resolve_window(self.raster_size, self.gt, self.bounds)
        except ValueError:
            raise ValueError(f"the mask's polygons ({self.path}, bounds "
                             f"{tuple(round(b, 3) for b in self.bounds)} in the raster's CRS) do "
                             "not overlap the raster: choose polygons over the raster") from None
        x, y, w, h = window
        x0, y0 = max(x, mx), max(y, my)
        x1, y1 = min(x + w, mx + mw), min(y + h, my + mh)
        if x1 <= x0 or y1 <= y0:
            raise ValueError("the mask's polygons do not overlap the chosen extent: choose an "
                             "extent that covers some of them, or no extent")
        return x0, y0, x1 - x0, y1 - y0

    # ------------------------------------------------------------------ pixels
    def pixels(self, x: int, y: int, w: int, h: int, all_touched: bool = False,
               step: int = 1) -> np.ndarray:
        """(h, w) bool: the grid pixels (x, y, w, h) (or cells of ``step`` x ``step`` pixels
        from there) inside the polygons; pixel centres decide unless ``all_touched``."""
        from osgeo import gdal

        ds = gdal.GetDriverByName("MEM").Create("", int(w), int(h), 1, gdal.GDT_Byte)
        a, b, c, d, e, f = window_geotransform(self.gt, int(x), int(y))
        ds.SetGeoTransform((a, b * step, c * step, d, e * step, f * step))
        corners = [(a + i * b * step * w + j * c * step * h, d + i * e * step * w +
                    j * f * step * h) for i in (0, 1) for j in (0, 1)]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        self._layer.SetSpatialFilterRect(min(xs), min(ys), max(xs), max(ys))
        try:
            err = gdal.RasterizeLayer(ds, [1], self._layer, burn_values=[1],
                                      options=["ALL_TOUCHED=TRUE"] if all_touched else [])
        finally:
            self._layer.SetSpatialFilter(None)
        if err != 0:
            raise RuntimeError(f"rasterising the mask failed: {gdal.GetLastErrorMsg()}")
        return ds.GetRasterBand(1).ReadAsArray().astype(bool)

    def window_pixels(self, win: Window) -> np.ndarray:
        """(h, w) bool of a patch window (raster pixel coordinates)."""
        return self.pixels(int(win.x), int(win.y), int(win.w), int(win.h))

    # ------------------------------------------------------------------ patches
    def restrict(self, plan: Plan) -> None:
        """Move the plan's patches without a mask pixel in the processed window to
        ``plan.skipped`` (plan order kept in both lists)."""
        x0, y0, ww, wh = plan.window
        step = max(1, math.ceil(max(ww, wh) / COARSE_MAX))
        coarse = self.pixels(x0, y0, -(-ww // step), -(-wh // step), all_touched=True,
                             step=step)
        run, skipped = [], []
        for patch in plan.patches:
            (run if self._touches(patch, plan.window, coarse, step) else skipped).append(patch)
        if not run:
            raise ValueError("no pixel centre of the raster lies inside the mask's polygons "
                             "(are they smaller than a pixel?): give larger polygons")
        log.info("mask: %d of %d patches run, %d skipped", len(run), len(plan.patches),
                 len(skipped))
        plan.patches, plan.skipped = run, skipped

    def _touches(self, patch: Patch, window: PixelWindow, coarse: np.ndarray,
                 step: int) -> bool:
        x0, y0, ww, wh = window
        win = patch.window
        a, b = max(int(win.x), x0), min(int(win.x + win.w), x0 + ww)
        c, d = max(int(win.y), y0), min(int(win.y + win.h), y0 + wh)
        if b <= a or d <= c:
            return False
        cells = coarse[(c - y0) // step:-(-(d - y0) // step), (a - x0) // step:-(-(b - x0) // step)]
        return bool(cells.any()) and bool(self.pixels(a, c, b - a, d - c).any())


def open_mask(options, reader) -> PolygonMask | None:
    """The run's mask on ``reader``'s grid, or None without ``options.mask``."""
    if not options.mask:
        return None
    for out in (options.output, options.vector):
        if out and os.path.exists(options.mask) and \
                os.path.realpath(out) == os.path.realpath(options.mask):
            raise ValueError(f"the mask {options.mask} is also an output: choose another "
                             "output path")
    return PolygonMask(options.mask, options.mask_layer, reader.crs_wkt, reader.geotransform,
                       (reader.width, reader.height))


# --------------------------------------------------------------------------- reading
def _pick_layer(src, name: str | None, path: str):
    names = [src.GetLayerByIndex(i).GetName() for i in range(src.GetLayerCount())]
    if name:
        layer = src.GetLayerByName(name)
        if layer is None:
            raise ValueError(f"the mask {path} has no layer {name!r}: choose one of {names}")
        return layer
    if len(names) != 1:
        raise ValueError(f"the mask {path} holds {len(names)} layers {names}: name the one to "
                         "use (--mask-layer)" if names else
                         f"the mask {path} holds no layer: give a polygon layer")
    return src.GetLayerByIndex(0)


def _copy_polygons(layer, dst, crs_wkt: str, path: str) -> int:
    """Copy ``layer``'s polygons into ``dst``, reprojected to ``crs_wkt``; their count."""
    from osgeo import ogr, osr

    target = srs_of(crs_wkt)
    source = layer.GetSpatialRef()
    transform = None
    if source is not None and target is not None:
        source = source.Clone()
        source.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not source.IsSame(target):
            transform = osr.CoordinateTransformation(source, target)
    elif source is None and target is not None:
        log.warning("the mask %s has no CRS: its coordinates are taken in the raster's CRS", path)
    elif source is not None:
        log.warning("the raster has no CRS: the mask's coordinates are taken as pixel-grid map "
                    "coordinates")
    layer.ResetReading()
    count = skipped = 0
    defn = dst.GetLayerDefn()
    for feat in layer:
        geom = feat.GetGeometryRef()
        if geom is None or geom.IsEmpty():
            continue
        if geom.GetDimension() != 2:
            skipped += 1
            continue
        geom = geom.Clone()
        if transform is not None and geom.Transform(transform) != 0:
            raise ValueError(f"the mask {path}'s polygons cannot be reprojected to the raster's "
                             "CRS (outside its area of use?): give polygons over the raster")
        out = ogr.Feature(defn)
        out.SetGeometry(geom)
        dst.CreateFeature(out)
        count += 1
    if skipped:
        log.warning("the mask %s: %d point or line feature(s) ignored", path, skipped)
    if not count:
        raise ValueError(f"the mask {path} holds no polygon" +
                         (" (only points or lines)" if skipped else "") +
                         ": give a layer with polygons (and select some when only the selected "
                         "features are used)")
    return count
