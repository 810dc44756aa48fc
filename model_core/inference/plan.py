"""Which patches run, in which order, and which output pixels each part of the run owns.

The patch grid is the paper's grid over the whole raster (:func:`model_core.geometry.
patch_starts`); a processed extent keeps the patches that touch it, so an extent run gives the
same labels as the whole-raster run inside the extent. Patches run row by row; rasters too wide
for the memory budget are split into column groups, each run top to bottom. A group owns the
output columns that only its patches cover, so it needs its neighbour's boundary patch column
as well (run twice) and every owned pixel still gets exactly the contributions, in the same
order, of the one-group run: the budget never changes the labels.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from ..geometry import DEFAULT_MIN_OVERLAP, Window, patch_starts

log = logging.getLogger(__name__)

PixelWindow = tuple[int, int, int, int]  # xoff, yoff, xsize, ysize


@dataclass(frozen=True)
class Patch:
    """One local patch I of the run (raster pixel coordinates)."""

    row: int
    col: int
    window: Window
    group: int


@dataclass(frozen=True)
class ColumnGroup:
    """Patch columns ``cols`` run together; they complete output columns [own_x0, own_x1)."""

    index: int
    cols: range
    own_x0: int
    own_x1: int


@dataclass
class Plan:
    """The run: raster size, processed window, patch starts, column groups, patches in order;
    ``skipped``: patches not run (outside a polygon mask, :mod:`.mask`), in order too."""

    raster_size: tuple[int, int]
    patch_size: int
    window: PixelWindow
    xs: list[int]
    ys: list[int]
    groups: list[ColumnGroup]
    patches: list[Patch] = field(default_factory=list)
    skipped: list[Patch] = field(default_factory=list)

    @property
    def grid(self) -> tuple[int, int]:
        """Patches per row and per column of the processed area."""
        return len(self.xs), len(self.ys)


def make_plan(raster_size: tuple[int, int], patch_size: int, window: PixelWindow,
              num_classes: int, memory_mb: float = 1024.0,
              min_overlap: int = DEFAULT_MIN_OVERLAP) -> Plan:
    """Plan the run over ``window`` of a raster of ``raster_size`` (see the module docstring)."""
    width, height = raster_size
    x0, y0, w, h = window
    p = patch_size
    if min_overlap >= p:
        raise ValueError(f"the minimum overlap of {min_overlap} px must be smaller than the "
                         f"model's {p} px patches: lower --min-overlap")
    xs = [x for x in patch_starts(width, p, min_overlap) if x < x0 + w and x + p > x0]
    ys = [y for y in patch_starts(height, p, min_overlap) if y < y0 + h and y + p > y0]
    # Live merge memory per owned output column: at most one patch height of float32 logits
    # and uint8 labels.
    per_column = p * (4 * num_classes + 1)
    max_width = max(1, int(memory_mb * 2 ** 20 // per_column))
    groups = _column_groups(xs, p, x0, x0 + w, max_width)
    if len(groups) > 1:
        log.info("memory budget %.0f MiB: %d column groups of <= %d px", memory_mb, len(groups),
                 max_width)
    plan = Plan(raster_size, p, window, xs, ys, groups)
    for g in groups:
        for r, y in enumerate(ys):
            for c in g.cols:
                plan.patches.append(Patch(r, c, Window(xs[c], y, p, p), g.index))
    return plan


def _column_groups(xs: list[int], p: int, ex0: int, ex1: int, max_width: int
                   ) -> list[ColumnGroup]:
    n = len(xs)
    groups: list[ColumnGroup] = []
    own0 = ex0
    while own0 < ex1:
        a = next(c for c in range(n) if xs[c] + p > own0)   # first column covering own0

        def own_end(b: int) -> int:
            return min(xs[b], ex1) if b < n else ex1

        b = next(c for c in range(a + 1, n + 1) if own_end(c) > own0)  # the least progress
        while b < n and own_end(b + 1) - own0 <= max_width:
            b += 1
        own1 = own_end(b)
        groups.append(ColumnGroup(len(groups), range(a, b), own0, own1))
        own0 = own1
    return groups


# --------------------------------------------------------------------------- processed window
def resolve_window(raster_size: tuple[int, int], geotransform: tuple[float, ...],
                   extent: tuple[float, float, float, float] | None = None,
                   window: tuple[int, int, int, int] | None = None) -> PixelWindow:
    """The processed pixel window: the whole raster, a pixel ``window``, or the pixels that a
    map ``extent`` (xmin, ymin, xmax, ymax) touches; clipped to the raster."""
    width, height = raster_size
    if extent is not None and window is not None:
        raise ValueError("give either an extent (map coordinates) or a pixel window, not both")
    if window is not None:
        xoff, yoff, xsize, ysize = (int(v) for v in window)
        if xsize <= 0 or ysize <= 0:
            raise ValueError(f"pixel window {tuple(window)} is empty: give xoff yoff xsize ysize "
                             "with positive sizes")
        c0, r0, c1, r1 = xoff, yoff, xoff + xsize, yoff + ysize
        what = f"pixel window {tuple(window)}"
    elif extent is not None:
        xmin, ymin, xmax, ymax = (float(v) for v in extent)
        if not (xmax > xmin and ymax > ymin):
            raise ValueError(f"extent {tuple(extent)} is empty: give xmin ymin xmax ymax with "
                             "xmax > xmin and ymax > ymin")
        cols, rows = [], []
        for x, y in ((xmin, ymin), (xmin, ymax), (xmax, ymin), (xmax, ymax)):
            col, row = map_to_pixel(geotransform, x, y)
            cols.append(col)
            rows.append(row)
        eps = 1e-6  # an extent on pixel edges must not take the neighbouring pixel
        c0, c1 = math.floor(min(cols) + eps), math.ceil(max(cols) - eps)
        r0, r1 = math.floor(min(rows) + eps), math.ceil(max(rows) - eps)
        what = f"extent {tuple(extent)}"
    else:
        return 0, 0, width, height
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, width), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        gt = geotransform
        bounds = (gt[0], gt[3] + height * gt[5], gt[0] + width * gt[1], gt[3])
        raise ValueError(f"the {what} does not intersect the raster ({width} x {height} px, "
                         f"bounds {tuple(round(b, 6) for b in bounds)} in its CRS): give an "
                         "extent in the raster's CRS that overlaps it")
    return c0, r0, c1 - c0, r1 - r0


def map_to_pixel(gt: tuple[float, ...], x: float, y: float) -> tuple[float, float]:
    """Fractional (column, row) of map point (x, y) under ``gt`` (any affine geotransform)."""
    a, b, d, e = gt[1], gt[2], gt[4], gt[5]
    det = a * e - b * d
    if det == 0:
        raise ValueError(f"the raster's geotransform {tuple(gt)} cannot be inverted")
    dx, dy = x - gt[0], y - gt[3]
    return (e * dx - b * dy) / det, (-d * dx + a * dy) / det


def window_geotransform(gt: tuple[float, ...], xoff: int, yoff: int) -> tuple[float, ...]:
    """Geotransform of the sub-raster starting at pixel (xoff, yoff)."""
    return (gt[0] + xoff * gt[1] + yoff * gt[2], gt[1], gt[2],
            gt[3] + xoff * gt[4] + yoff * gt[5], gt[4], gt[5])
