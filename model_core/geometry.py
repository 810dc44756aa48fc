"""Patch grid and context windows (Sec. 3.1-3.2): the one source of truth for where the local
patch I and its contexts M and L lie in a raster, shared by inference and training.

All windows are in raster pixel coordinates (x to the right, y down). Context windows are centred
on their patch and may extend past the raster (the reader pads that area), except the global
context, which is the whole raster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Any

from .config import parse_context_size

DEFAULT_MIN_OVERLAP = 50

# The 8 symmetries of the square, as (quarter turns, horizontal flip first): training's
# augmentation and the engine's test-time augmentation (the paper's 8 passes).
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def dihedral(arr: Any, k: int, flip: bool) -> Any:
    """Flip left-right (last axis), then rotate ``k`` quarter turns in the last two axes; numpy
    arrays or torch tensors (views where the library gives them)."""
    if hasattr(arr, "rot90"):   # a torch tensor
        if flip:
            arr = arr.flip(-1)
        return arr.rot90(k, dims=(-2, -1)) if k % 4 else arr
    import numpy as np

    if flip:
        arr = arr[..., ::-1]
    return np.rot90(arr, k, axes=(-2, -1)) if k % 4 else arr


@dataclass(frozen=True)
class Window:
    """A rectangle in pixel coordinates; float for contexts, integral for patches."""

    x: float
    y: float
    w: float
    h: float

    @property
    def x1(self) -> float:
        return self.x + self.w

    @property
    def y1(self) -> float:
        return self.y + self.h


def patch_starts(length: int, patch: int, min_overlap: int = DEFAULT_MIN_OVERLAP) -> list[int]:
    """Offsets of the fewest patches covering ``length`` with neighbours overlapping by at least
    ``min_overlap`` px, first at 0 and last flush with the end (2448 -> 6 patches, step 388)."""
    if patch <= min_overlap:
        raise ValueError(f"patch size {patch} must exceed the minimum overlap {min_overlap}")
    if length <= patch:
        return [0]
    n = math.ceil((length - min_overlap) / (patch - min_overlap))
    n = max(n, 2)
    step = (length - patch) / (n - 1)
    return [int(round(i * step)) for i in range(n - 1)] + [length - patch]


def patch_grid(width: int, height: int, patch: int, min_overlap: int = DEFAULT_MIN_OVERLAP,
               origin: tuple[int, int] = (0, 0)) -> list[Window]:
    """Row-major patch windows over a ``width`` x ``height`` area starting at ``origin``."""
    ox, oy = origin
    xs = patch_starts(width, patch, min_overlap)
    ys = patch_starts(height, patch, min_overlap)
    return [Window(ox + x, oy + y, patch, patch) for y in ys for x in xs]


def context_window(patch: Window, spec: str, patch_size: int, raster_size: tuple[int, int]
                   ) -> Window:
    """The context window of ``spec`` (``"x3"``, ``"1524"``, ``"global"``) for ``patch``."""
    if str(spec).lower() == "global":
        return Window(0.0, 0.0, float(raster_size[0]), float(raster_size[1]))
    w, h = parse_context_size(spec, patch_size)
    cx, cy = patch.x + patch.w / 2, patch.y + patch.h / 2
    return Window(cx - w / 2, cy - h / 2, w, h)


def box_in(patch: Window, context: Window) -> tuple[float, float, float, float]:
    """Where ``patch`` lies inside ``context``, normalised (x0, y0, x1, y1): the ``boxes`` that
    :class:`model_core.models.FCtL` takes."""
    return ((patch.x - context.x) / context.w, (patch.y - context.y) / context.h,
            (patch.x1 - context.x) / context.w, (patch.y1 - context.y) / context.h)
