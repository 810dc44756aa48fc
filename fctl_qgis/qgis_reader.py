"""A :class:`model_core.inference.reader.WindowReader` over a QGIS raster data provider.

Used for layers GDAL cannot open by path: XYZ and WMS layers, or any provider QGIS knows. The
reader defines a pixel grid over an extent of the layer (its own extent and size when the provider
has a native pixel size, otherwise a requested extent at the finest native resolution or at a
chosen pixel size) and reads windows of it with ``QgsRasterDataProvider.block``. Colour layers
(XYZ/WMS tiles are ARGB32) appear as four bands: red, green, blue, alpha.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from qgis.core import (Qgis, QgsCoordinateReferenceSystem, QgsRasterDataProvider,
                       QgsRasterInterface, QgsRasterLayer, QgsRectangle)

from .engine import engine_import
WindowReader = engine_import("inference.reader", "WindowReader")
# the WKT GDAL reads best (scoped enum: the same spelling works on QGIS 3 and 4)
WKT_GDAL = QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED_GDAL
area_average = engine_import("resample", "area_average")

log = logging.getLogger(__name__)

_DTYPES = {"Byte": np.uint8, "UInt16": np.uint16, "Int16": np.int16, "UInt32": np.uint32,
           "Int32": np.int32, "Float32": np.float32, "Float64": np.float64}
_ARGB = ("ARGB32", "ARGB32_Premultiplied")
MAX_PIXELS = 60000 * 60000   # a grid larger than this is a mistaken extent or resolution
# Tile providers (XYZ/WMS) render small decimated requests unreliably: windows up to this size are
# read at full resolution and decimated here.
FULL_READ_PIXELS = 1 << 25


def _type_name(dt) -> str:
    for name in list(_DTYPES) + list(_ARGB):
        if dt == getattr(Qgis, name, None):
            return name
    raise ValueError(f"raster data type {dt} is not supported (use a numeric or colour layer)")


class ProviderReader(WindowReader):
    """Windows of a QGIS raster provider on a regular pixel grid.

    Args:
        source: a raster layer or its data provider (it is cloned: the clone is safe to read
            from a worker thread).
        extent: area of the grid in the layer's CRS (default: the provider's extent).
        pixel_size: grid pixel size in layer units (default: native; required when the provider
            has neither a pixel size nor native resolutions).
    """

    def __init__(self, source: QgsRasterLayer | QgsRasterDataProvider,
                 extent: QgsRectangle | None = None, pixel_size: float | None = None) -> None:
        provider = source.dataProvider() if isinstance(source, QgsRasterLayer) else source
        if provider is None or not provider.isValid():
            raise ValueError("the raster layer's data provider is not valid: check the layer's "
                             "source in Layer Properties")
        self._provider = provider.clone()
        sized = bool(provider.capabilities() & QgsRasterInterface.Capability.Size) \
            and provider.xSize() > 0
        extent = QgsRectangle(extent) if extent is not None and not extent.isEmpty() \
            else QgsRectangle(provider.extent())
        if pixel_size is None or pixel_size <= 0:
            if sized:
                pixel_size = None
            else:
                res = [r for r in (provider.nativeResolutions() or []) if r > 0]
                if not res:
                    raise ValueError(f"the layer ({provider.name()}) has no native pixel size: "
                                     "choose a pixel size")
                pixel_size = min(res)
        if pixel_size is None and extent == provider.extent():
            self.width, self.height = provider.xSize(), provider.ySize()
            dx = extent.width() / self.width
            dy = extent.height() / self.height
        else:
            if pixel_size is None:  # native pixel size over a sub-extent
                pixel_size = provider.extent().width() / provider.xSize()
            dx = dy = float(pixel_size)
            self.width = max(1, int(round(extent.width() / dx)))
            self.height = max(1, int(round(extent.height() / dy)))
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"a {self.width} x {self.height} px grid is too large: choose a "
                             "smaller extent or a coarser pixel size")
        self._extent = extent
        self._dx, self._dy = dx, dy
        self.geotransform = (extent.xMinimum(), dx, 0.0, extent.yMaximum(), 0.0, -dy)
        crs: QgsCoordinateReferenceSystem = provider.crs()
        self.crs_wkt = crs.toWkt(WKT_GDAL) \
            if crs.isValid() else ""
        self._types = [_type_name(provider.dataType(b)) for b in range(1, provider.bandCount() + 1)]
        self._colour = self._types[0] in _ARGB
        if self._colour:
            self.band_count = 4
            self.dtype = np.dtype(np.uint8)
            self.nodata = [None] * 4
        else:
            self.band_count = provider.bandCount()
            self.dtype = np.dtype(np.result_type(*[_DTYPES[t] for t in self._types]))
            self.nodata = [provider.sourceNoDataValue(b)
                           if provider.sourceHasNoDataValue(b) and provider.useSourceNoDataValue(b)
                           else None for b in range(1, self.band_count + 1)]
            # the engine reads a blue, green, red, NIR product's colours by these names
            self.color_interpretations = [provider.colorInterpretationName(b)
                                          for b in range(1, self.band_count + 1)]

    # ------------------------------------------------------------------ helpers
    def _rect(self, xoff: int, yoff: int, xsize: int, ysize: int) -> QgsRectangle:
        x0 = self._extent.xMinimum() + xoff * self._dx
        y1 = self._extent.yMaximum() - yoff * self._dy
        return QgsRectangle(x0, y1 - ysize * self._dy, x0 + xsize * self._dx, y1)

    def _block(self, band: int, rect: QgsRectangle, w: int, h: int) -> np.ndarray:
        block = self._provider.block(band, rect, w, h)
        if block is None or not block.isValid():
            raise OSError(f"the {self._provider.name()} provider returned no data for band "
                          f"{band} of {rect.toString()}")
        name = self._types[band - 1]
        dtype = np.uint32 if name in _ARGB else _DTYPES[name]
        return np.frombuffer(bytes(block.data()), dtype=dtype).reshape(h, w)

    def _check(self, bands: Sequence[int]) -> None:
        bad = [b for b in bands if not 1 <= b <= self.band_count]
        if bad:
            raise ValueError(f"band(s) {bad} do not exist: the layer has {self.band_count} "
                             "band(s)" + (" (red, green, blue, alpha)" if self._colour else ""))

    def _colour_planes(self, rect: QgsRectangle, w: int, h: int) -> np.ndarray:
        argb = self._block(1, rect, w, h)
        return np.stack([(argb >> 16) & 255, (argb >> 8) & 255, argb & 255, argb >> 24])

    # ------------------------------------------------------------------ WindowReader
    def read(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int],
             out_w: int | None = None, out_h: int | None = None) -> np.ndarray:
        self._check(bands)
        w, h = out_w or xsize, out_h or ysize
        rect = self._rect(xoff, yoff, xsize, ysize)
        # Contexts are area means, as in training and GDAL's average reads: fetch the window at
        # full resolution (or, past FULL_READ_PIXELS, at the largest whole multiple m of the
        # output that fits, m^2 provider samples per output pixel) and average it down. Providers'
        # own downsampling is nearest neighbour.
        if (w, h) != (xsize, ysize) and (w < xsize or h < ysize):
            m = 0 if xsize * ysize <= FULL_READ_PIXELS else \
                max(1, int((FULL_READ_PIXELS / (w * h)) ** 0.5))
            rw, rh = (xsize, ysize) if m == 0 else (min(xsize, m * w), min(ysize, m * h))
        else:
            rw, rh = w, h
        if self._colour:
            planes = self._colour_planes(rect, rw, rh)[[b - 1 for b in bands]]
        else:
            planes = np.stack([self._block(b, rect, rw, rh) for b in bands])
        if (rw, rh) != (w, h):
            return area_average(planes, h, w, integer=np.issubdtype(planes.dtype, np.integer))
        return planes.astype(np.float32)

    def valid(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]
              ) -> np.ndarray:
        self._check(bands)
        rect = self._rect(xoff, yoff, xsize, ysize)
        if self._colour:
            return self._colour_planes(rect, xsize, ysize)[3] > 0
        mask = np.ones((ysize, xsize), dtype=bool)
        for b in bands:
            nd = self.nodata[b - 1]
            if nd is not None:
                arr = self._block(b, rect, xsize, ysize)
                mask &= ~(np.isnan(arr) if np.isnan(nd) else arr == nd)
        return mask

    def close(self) -> None:
        self._provider = None


def gdal_path(layer: QgsRasterLayer) -> str | None:
    """The layer's source when GDAL opens it directly (then the engine reads it itself)."""
    if layer.providerType() != "gdal":
        return None
    from osgeo import gdal

    source = layer.source()
    # works whatever the process-wide GDAL exception mode is (never toggled here: the engine
    # may be running in another thread)
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.OpenEx(source, gdal.OF_RASTER | gdal.OF_READONLY)
    except RuntimeError:
        ds = None
    finally:
        gdal.PopErrorHandler()
    return source if ds is not None else None


def _ground_m(provider, extent: QgsRectangle, units: float) -> float | None:
    """Metres on the ground of ``units`` layer units at the centre of ``extent``."""
    from .engine import engine_import
    ground_of = engine_import("ground", "ground_of")

    crs = provider.crs()
    if not crs.isValid():
        return None
    gt = (extent.xMinimum(), units, 0.0, extent.yMaximum(), 0.0, -units)
    w = max(1, int(extent.width() / units))
    h = max(1, int(extent.height() / units))
    return ground_of(gt, crs.toWkt(WKT_GDAL),
                     w, h).pixel_size_m


def provider_pixel_size(layer: QgsRasterLayer, extent: QgsRectangle | None,
                        pixel_size_m: float | str | None, model_gsd: float | None
                        ) -> float | None:
    """The grid pixel size (layer units) at which a provider layer is read so that the model
    runs at ``pixel_size_m`` metres (0/None/"auto" = the model's ``gsd``; "native" = the
    layer's), with the engine's 15 % tolerance; None = the layer's native pixel size."""
    from .engine import engine_import
    TOLERANCE, parse_pixel_size = engine_import(
        "inference.resolution", "TOLERANCE", "parse_pixel_size")

    want = parse_pixel_size(pixel_size_m)
    target = model_gsd if want == "auto" else None if want == "native" else want
    if target is None:
        return None
    provider = layer.dataProvider()
    area = QgsRectangle(extent) if extent is not None and not extent.isEmpty() \
        else QgsRectangle(provider.extent())
    sized = bool(provider.capabilities() & QgsRasterInterface.Capability.Size) \
        and provider.xSize() > 0
    if sized:
        native = provider.extent().width() / provider.xSize()
    else:
        res = [r for r in (provider.nativeResolutions() or []) if r > 0]
        if not res:
            return None
        native = min(res)
    native_m = _ground_m(provider, area, native)
    if not native_m:
        log.warning("the layer's pixel size on the ground is unknown (no CRS): it is read at "
                    "its native pixel size")
        return None
    if want == "auto" and abs(target / native_m - 1) <= TOLERANCE:
        return None
    log.info("reading %s at %.3g m per pixel (native %.3g m)", layer.name(), target, native_m)
    return native * target / native_m


def reader_for_layer(layer: QgsRasterLayer, extent: QgsRectangle | None = None,
                     pixel_size: float | None = None, model_gsd: float | None = None
                     ) -> tuple[str, WindowReader | None]:
    """(input, reader) for :func:`model_core.inference.segment`: the GDAL path and no reader for
    files GDAL opens (the engine then reads them at the processing pixel size itself), else a
    :class:`ProviderReader` named after the layer, at the processing pixel size.

    ``pixel_size`` is the processing pixel size in metres (0/None = the model's, ``model_gsd``).
    The caller passes ``extent`` to the engine as well, whatever the reader (it is in the
    layer's CRS, the reader's too). It bounds the reader's grid only for providers without a
    pixel size (XYZ, WMS), whose own extent is the whole world, and for sized ones (WCS,
    PostGIS raster, virtual rasters) whose whole grid at that pixel size would be too large;
    otherwise the grid is the whole layer, so that contexts reach beyond the extent as they do
    for files GDAL opens.
    """
    path = gdal_path(layer)
    if path is not None:
        return path, None
    provider = layer.dataProvider()
    sized = bool(provider.capabilities() & QgsRasterInterface.Capability.Size) \
        and provider.xSize() > 0
    units = provider_pixel_size(layer, extent, pixel_size, model_gsd)
    whole = sized and _grid_pixels(provider, units) <= MAX_PIXELS
    return layer.name(), ProviderReader(layer, None if whole else extent, units)


def _grid_pixels(provider, units: float | None) -> float:
    """Pixels of the provider's whole grid at ``units`` (None: its own size)."""
    if units is None:
        return float(provider.xSize()) * provider.ySize()
    ext = provider.extent()
    return max(1.0, round(ext.width() / units)) * max(1.0, round(ext.height() / units))
