"""Decimated reads by integral factors in numpy, with the values GDAL's averaging read gives.

Every patch's medium context (x3) and every shared-context tile is a window read to a third of
its size. GDAL's ``GRIORA_Average`` read of a 1524 px RGB window costs about 8 ms (block cache
warm; generic resampling code), reading the window at full resolution and summing 3 x 3 blocks
in numpy about 4.5 ms. The reads run in the prefetch thread, which on 2 cores competes with the
network for the cores (and next to a GPU can become the bottleneck). For integer rasters GDAL
(3.6, Debian 12's) averages each block and rounds half away from zero; :func:`box_average` does
the same in exact integer arithmetic, so the network sees the same values and the labels do not
change.

The fast path is only taken where GDAL itself would average full-resolution pixels: an integer
band type, no overviews (GDAL would read those instead), no nodata or mask (GDAL would leave
those pixels out of the mean), an integral factor, a window of at most
:data:`MAX_WINDOW_PIXELS`. :class:`BoxDecimation` checks its first result against GDAL's own read
of the same window and falls back to GDAL for good if they differ (another GDAL version).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

# Largest window read at full resolution for the numpy path (bounded memory: 4096^2 x bands).
MAX_WINDOW_PIXELS = 4096 * 4096
_DRIVERS = {"GTiff", "MEM"}   # drivers whose decimated reads go through GDAL's generic path


def accumulator(dtype: np.dtype, n: int, headroom: int = 1) -> type:
    """The narrowest integer type that holds ``headroom`` x a sum of ``n`` values of ``dtype``
    (plus ``n``): uint16 for 3 x 3 bytes, where adds run twice as fast as in uint32."""
    info = np.iinfo(dtype)
    if info.min >= 0:
        top = (headroom * int(info.max) + 1) * n
        return np.uint16 if top <= np.iinfo(np.uint16).max else \
            np.uint32 if top <= np.iinfo(np.uint32).max else np.uint64
    return np.int64


def block_sums(a: np.ndarray, fy: int, fx: int, acc: type | None = None) -> np.ndarray:
    """Exact sums of fy x fx blocks of integer ``a`` (C, H, W): (C, H / fy, W / fx) in ``acc``
    (default :func:`accumulator`); H and W must be multiples of the factors."""
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"block sums take integer values, got {a.dtype}")
    c, h, w = a.shape
    if h % fy or w % fx:
        raise ValueError(f"a {w} x {h} window does not split into {fx} x {fy} blocks")
    acc = acc or accumulator(a.dtype, fy * fx)
    rows = a.reshape(c, h // fy, fy, w)
    s = rows[:, :, 0].astype(acc)
    for k in range(1, fy):
        s += rows[:, :, k]
    cols = s.reshape(c, h // fy, w // fx, fx)
    out = cols[..., 0].copy()
    for k in range(1, fx):
        out += cols[..., k]
    return out


def box_average(a: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Means of fy x fx blocks of integer ``a`` (C, H, W), rounded half away from zero, as
    float32 (C, H / fy, W / fx); H and W must be multiples of the factors."""
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"box_average takes integer values, got {a.dtype}")
    n = fy * fx
    # room for 2 * sum + n, the rounding below
    s = block_sums(a, fy, fx, accumulator(a.dtype, n, headroom=2))
    if np.iinfo(a.dtype).min >= 0:
        q = (2 * s + n) // (2 * n)
    else:
        q = np.sign(s) * ((2 * np.abs(s) + n) // (2 * n))
    return q.astype(np.float32)


class BoxDecimation:
    """Decides, per read, whether a GDAL dataset's decimated read can be done by
    :func:`box_average`, and reads it that way."""

    def __init__(self, ds) -> None:
        from osgeo import gdal

        self._ds = ds
        bands = [ds.GetRasterBand(b) for b in range(1, ds.RasterCount + 1)]
        driver = ds.GetDriver().ShortName if ds.GetDriver() is not None else ""
        # the integer types whose rounding was checked against GDAL 3.6
        integer = {gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16}
        self.usable = (
            driver in _DRIVERS
            and all(b.DataType in integer for b in bands)
            and all(b.GetOverviewCount() == 0 for b in bands)
            and all(b.GetNoDataValue() is None for b in bands)
            and all(b.GetMaskFlags() == gdal.GMF_ALL_VALID for b in bands))
        self._checked = False

    def factors(self, xsize: int, ysize: int, out_w: int, out_h: int) -> tuple[int, int] | None:
        """(fy, fx) when this read can take the numpy path, else None."""
        if not self.usable or xsize * ysize > MAX_WINDOW_PIXELS:
            return None
        if out_w >= xsize and out_h >= ysize:
            return None
        if xsize % out_w or ysize % out_h:
            return None
        return ysize // out_h, xsize // out_w

    def read(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: list[int],
             factors: tuple[int, int], gdal_read) -> np.ndarray:
        """The averaged window (len(bands), out_h, out_w) as float32. ``gdal_read()`` is GDAL's
        own decimated read of the same window, used to check the first result."""
        raw = self._ds.ReadAsArray(int(xoff), int(yoff), int(xsize), int(ysize),
                                   band_list=bands)
        if raw is None:
            return gdal_read()
        out = box_average(raw.reshape(len(bands), ysize, xsize), *factors)
        if not self._checked:
            self._checked = True
            ref = gdal_read()
            if not np.array_equal(ref, out):
                self.usable = False
                log.info("GDAL's averaged reads differ from block means here: using GDAL's")
                return ref
        return out
