"""Window readers: the only way the engine touches raster pixels.

:class:`WindowReader` is the interface; :class:`GdalReader` (GDAL datasets by path) implements it
here, and the QGIS plugin implements it over a layer's data provider for sources GDAL cannot open
by path (XYZ, WMS, ...). Readers never modify their source.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np


class WindowReader(abc.ABC):
    """Read-only access to rectangular windows of a raster.

    Attributes:
        width, height: raster size in pixels.
        band_count: number of bands.
        geotransform: GDAL geotransform (x0, dx, rx, y0, ry, dy).
        crs_wkt: the CRS as WKT, '' when the raster has none.
        nodata: per band, the nodata value or None.
        dtype: numpy dtype of the raw values.
    """

    width: int
    height: int
    band_count: int
    geotransform: tuple[float, float, float, float, float, float]
    crs_wkt: str
    nodata: list[float | None]
    dtype: np.dtype

    @abc.abstractmethod
    def read(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int],
             out_w: int | None = None, out_h: int | None = None) -> np.ndarray:
        """Raw values of an in-raster window as float32, shape (len(bands), out_h, out_w).

        ``bands`` are 1-based. With ``out_w``/``out_h`` the window is resampled (decimated read,
        from overviews where the source has them). The window must lie inside the raster; the
        engine clips and pads.
        """

    @abc.abstractmethod
    def valid(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]
              ) -> np.ndarray:
        """Boolean (ysize, xsize) mask, False where the source marks the pixel as nodata/masked
        in any of ``bands``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the source."""

    def __enter__(self) -> "WindowReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
