"""GDAL's sieve filter run tile by tile with a halo, in memory bounded by the threshold.

``gdal.SieveFilter`` over a whole band keeps four integers per region of the raster, so its
memory grows with the raster (a noisy 100,000 px raster has hundreds of millions of regions).
Here each tile of the output is sieved inside a window that extends ``halo`` pixels beyond it
on every side, and only the tile is written. With ``halo >= threshold`` a region with a pixel in
the tile is judged by its full size: a 4-connected region of fewer than ``threshold`` pixels
spans fewer than ``threshold`` rows and columns, so it lies inside the window whole, and a region
cut by the window's edge has at least ``halo + 1`` pixels inside it. The same regions are
therefore removed as by one pass over the whole band. Each is merged into its largest
neighbour *as seen in the window*: a neighbour cut by the window's edge is counted by its part
inside, so where two large neighbours border a small region the one chosen can differ from a
one-pass sieve; a halo of twice the threshold makes that rare.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

TILE = 2048   # output tile side (pixels); windows are (tile + 2 * halo) a side


def sieve_window_halo(threshold_px: int) -> int:
    """Rows and columns of context around each tile for ``threshold_px`` (see module doc)."""
    return max(0, 2 * int(threshold_px))


def sieve_bands(sband, dband, threshold_px: int, tile: int = TILE,
                progress: Callable[[float], None] | None = None,
                is_cancelled: Callable[[], bool] | None = None) -> None:
    """Sieve ``sband`` (mask: its mask band) into ``dband`` (another band of the same size, not
    the same band: tiles read their halo from the unsieved source)."""
    from osgeo import gdal, gdal_array

    from .options import Cancelled

    w, h = sband.XSize, sband.YSize
    halo = sieve_window_halo(threshold_px)
    tile = max(int(tile), halo)   # so a window is at most three tiles a side
    smask = sband.GetMaskBand()
    n_tiles = -(-w // tile) * -(-h // tile)
    done = 0
    for ty in range(0, h, tile):
        th = min(tile, h - ty)
        for tx in range(0, w, tile):
            if is_cancelled is not None and is_cancelled():
                raise Cancelled("segmentation cancelled while sieving")
            tw = min(tile, w - tx)
            x0, y0 = max(0, tx - halo), max(0, ty - halo)
            x1, y1 = min(w, tx + tw + halo), min(h, ty + th + halo)
            values = sband.ReadAsArray(x0, y0, x1 - x0, y1 - y0)
            valid = smask.ReadAsArray(x0, y0, x1 - x0, y1 - y0)
            if values is None or valid is None:
                raise OSError(f"cannot read the window {x0},{y0}-{x1},{y1} to sieve it: "
                              f"{gdal.GetLastErrorMsg()}")
            vds = gdal_array.OpenArray(values)       # MEM views on the arrays: no copy
            mds = gdal_array.OpenArray(valid)
            vband = vds.GetRasterBand(1)
            err = gdal.SieveFilter(vband, mds.GetRasterBand(1), vband, int(threshold_px), 4)
            if err != 0:
                raise OSError(f"sieving the window {x0},{y0}-{x1},{y1} failed: "
                              f"{gdal.GetLastErrorMsg()}")
            out = vband.ReadAsArray(tx - x0, ty - y0, tw, th)
            vband = vds = mds = None
            if dband.WriteArray(out, tx, ty) != 0:
                raise OSError(f"cannot write the sieved tile at {tx},{ty}: "
                              f"{gdal.GetLastErrorMsg()}")
            done += 1
            if progress is not None:
                progress(done / n_tiles)
        # write and drop cached blocks: GDAL's block cache would otherwise grow with the raster
        dband.FlushCache()
        sband.FlushCache()
        smask.FlushCache()
