"""Shared context features: each context encoded once per raster area, not once per patch.

A medium context M (Sec. 3.1) is the window of lambda x the patch size centred on the patch,
resized to the patch size, so it is a crop of the raster downsampled by lambda. Neighbouring
patches' M windows overlap by about (lambda - 1) / lambda of their area (2/3 for x3), and encoding
each one repeats that work: per patch, FCtL runs the encoder twice where the FCN-8s baseline runs
it once. In shared mode the engine instead encodes the downsampled raster once, in square tiles
with a halo, into a map of stride-s feature cells (s = the model's ``context_stride``, 32 for
FCtL), and gives each patch the features of its M window bilinearly sampled from that map: cell
j of a crop whose window starts u0 downsampled pixels into the map is map cell u0 / s + j.

Inside the window these are the features the per-patch encoding gives; near the window's edges
they differ, because a crop sees zero padding there and the map sees the neighbouring ground.
The labels therefore differ slightly from per-patch contexts (measured in the README), which is
why the mode is opt-in. The map is held for about two tile rows at a time.

Two halves, one per thread: :class:`SharedContextLayout` (with the reader) decides which tiles
each batch needs and which old ones to drop (in run order), and reads the images of new ones (in
a reading thread, in parallel with other batches' reads); :class:`SharedContextFeatures` (with
the network) encodes those images and samples the patches' features. Both follow the same
batches in the same order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..geometry import Window

TileKey = tuple[int, int]   # (tile row, tile column)

TILE_PX = 768     # tile side in downsampled pixels, halo included
HALO_CELLS = 1    # feature cells of halo on each side of a tile (dropped after encoding)


@dataclass
class TileLoad:
    """What one batch brings for one shared context: images of new tiles, tiles to drop, and
    where each patch's context window starts in the map (fractional feature cells, y and x)."""

    images: dict[TileKey, np.ndarray] = field(default_factory=dict)
    evict: list[TileKey] = field(default_factory=list)
    starts: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    # tiles planned but not read yet: key -> (raster window, out_w, out_h)
    pending: dict[TileKey, tuple[Window, int, int]] = field(default_factory=dict)


class SharedContextLayout:
    """The tile grid of one shared context over a run, and the reads it needs.

    Args:
        windows: the context window of every patch of the run (integral, all the same size).
        patch_size: P; a window of w px is downsampled by lambda = w / P.
        stride: downsampled pixels per feature cell (the model's ``context_stride``).
        cells: (rows, cols) of feature cells a P x P crop encodes to.
        read: reads a raster window resized to (out_w, out_h) as (C, h, w) in [0, 1], padded
            with 0 outside the raster (:meth:`PatchSource.image`).
        tile_px: tile side in downsampled pixels, halo included (rounded to whole cells).
        grid_windows: windows that fix the map's origin and size (with ``windows``). The engine
            passes the whole raster's first and last patches' windows, so that the tiles, and
            hence the labels, do not depend on the processed extent. Default: ``windows``.
    """

    def __init__(self, windows: Sequence[Window], patch_size: int, stride: int,
                 cells: tuple[int, int], read: Callable[[Window, int, int], np.ndarray],
                 tile_px: int = TILE_PX, halo: int = HALO_CELLS,
                 grid_windows: Sequence[Window] = ()) -> None:
        if not windows:
            raise ValueError("a shared context needs at least one patch")
        w0 = windows[0]
        self.scale = (w0.w / patch_size, w0.h / patch_size)   # lambda, x and y
        grid = list(grid_windows) or list(windows)
        self.origin = (min(w.x for w in grid), min(w.y for w in grid))
        self.stride = int(stride)
        self.cells = (int(cells[0]), int(cells[1]))
        self.halo = int(halo)
        self.tile = max(1, tile_px // self.stride - 2 * self.halo)  # core cells per tile side
        self.read = read
        ends = [self.cell_start(w) for w in [*windows, *grid]]
        rows = max(int(math.floor(r)) for r, _ in ends) + self.cells[0] + 1
        cols = max(int(math.floor(c)) for _, c in ends) + self.cells[1] + 1
        self.map_cells = (rows, cols)
        self.grid = (math.ceil(rows / self.tile), math.ceil(cols / self.tile))
        self._resident: set[TileKey] = set()
        self._last_row = -1

    # ----------------------------------------------------------------- geometry
    def cell_start(self, win: Window) -> tuple[float, float]:
        """Map cell coordinates (row, col) of the first feature cell of ``win``'s crop."""
        lx, ly = self.scale[0], self.scale[1]
        return ((win.y - self.origin[1]) / ly / self.stride,
                (win.x - self.origin[0]) / lx / self.stride)

    def tile_cells(self, key: TileKey) -> tuple[int, int, int, int]:
        """(row0, col0, rows, cols) of the map cells the tile's core covers."""
        r0, c0 = key[0] * self.tile, key[1] * self.tile
        return (r0, c0, min(self.tile, self.map_cells[0] - r0),
                min(self.tile, self.map_cells[1] - c0))

    def tile_window(self, key: TileKey) -> tuple[Window, int, int]:
        """The raster window of a tile (core + halo) and its size in downsampled pixels."""
        r0, c0, nr, nc = self.tile_cells(key)
        s, h = self.stride, self.halo
        out_w, out_h = (nc + 2 * h) * s, (nr + 2 * h) * s
        lx, ly = self.scale
        x0 = round(self.origin[0] + (c0 - h) * s * lx)
        y0 = round(self.origin[1] + (r0 - h) * s * ly)
        return Window(float(x0), float(y0), float(round(out_w * lx)),
                      float(round(out_h * ly))), out_w, out_h

    def tiles_for(self, start: tuple[float, float]) -> set[TileKey]:
        """Tiles holding the cells a crop starting at map cell ``start`` samples."""
        r0, c0 = int(math.floor(start[0])), int(math.floor(start[1]))
        r1, c1 = r0 + self.cells[0], c0 + self.cells[1]   # inclusive: the bilinear neighbour
        return {(r, c) for r in range(r0 // self.tile, r1 // self.tile + 1)
                for c in range(c0 // self.tile, c1 // self.tile + 1)}

    # ----------------------------------------------------------------- per batch
    def load(self, windows: Sequence[Window]) -> TileLoad:
        """Starts of ``windows``, the images of tiles not yet held, and tiles no longer needed:
        :meth:`plan` then :meth:`fill`."""
        return self.fill(self.plan(windows))

    def fill(self, load: TileLoad) -> TileLoad:
        """Read the images of ``load``'s pending tiles (safe in parallel with other batches'
        fills: it only reads)."""
        for key, (win, w, h) in sorted(load.pending.items()):
            load.images[key] = self.read(win, w, h)
        load.pending = {}
        return load

    def plan(self, windows: Sequence[Window]) -> TileLoad:
        """Starts of ``windows``, the tiles to read, and tiles no longer needed; batches must be
        planned in run order.

        Patches come row by row (a column group at a time), so a tile row above every patch of
        the batch is done; when the rows restart (the next column group) all unused tiles go.
        """
        starts = [self.cell_start(w) for w in windows]
        needed: set[TileKey] = set()
        for st in starts:
            needed |= self.tiles_for(st)
        top = min(k[0] for k in needed) if needed else 0
        if top < self._last_row:
            evict = [k for k in self._resident if k not in needed]
        else:
            evict = [k for k in self._resident if k[0] < top]
        self._last_row = top
        self._resident.difference_update(evict)
        out = TileLoad(evict=sorted(evict), starts=np.asarray(starts, np.float64).reshape(-1, 2))
        out.pending = {key: self.tile_window(key) for key in sorted(needed - self._resident)}
        self._resident |= needed
        return out


class SharedContextFeatures:
    """Encoded tiles of one shared context (per TTA transform) and sampling of crops from them.

    Args:
        layout: the tile grid (the same object the reader side uses, only its geometry is read).
        encode: image (1, C, H, W) -> features (1, C', H / s, W / s) in the map's orientation
            (the predictor undoes its TTA transform on them).
        transforms: the TTA transforms the tiles are encoded under.
    """

    def __init__(self, layout: SharedContextLayout,
                 encode: Callable[[np.ndarray, object], Tensor],
                 transforms: Sequence[object]) -> None:
        self.layout = layout
        self.encode = encode
        self.transforms = tuple(transforms)
        self.tiles: dict[object, dict[TileKey, Tensor]] = {t: {} for t in self.transforms}

    def update(self, load: TileLoad) -> None:
        """Drop evicted tiles, encode new ones and keep their core cells."""
        for t in self.transforms:
            for key in load.evict:
                self.tiles[t].pop(key, None)
        h = self.layout.halo
        for key, image in load.images.items():
            _, _, nr, nc = self.layout.tile_cells(key)
            for t in self.transforms:
                feats = self.encode(image, t)[0]
                self.tiles[t][key] = feats[:, h:h + nr, h:h + nc]

    @property
    def held_tiles(self) -> int:
        return len(self.tiles[self.transforms[0]])

    def sample(self, starts: np.ndarray, transform: object) -> Tensor:
        """(B, C, rows, cols) features of crops starting at map cells ``starts`` (B, 2),
        bilinear between the four neighbouring cells (exact when a start is whole)."""
        nr, nc = self.layout.cells
        out = []
        for r, c in starts:
            r0, c0 = int(math.floor(r)), int(math.floor(c))
            fy, fx = float(r - r0), float(c - c0)
            block = self._block(r0, c0, nr + 1, nc + 1, transform).float()
            rows = block[:, :nr] * (1 - fy) + block[:, 1:] * fy if fy else block[:, :nr]
            crop = rows[:, :, :nc] * (1 - fx) + rows[:, :, 1:] * fx if fx else rows[:, :, :nc]
            out.append(crop)
        first = next(iter(self.tiles[transform].values()))
        return torch.stack(out).to(first.dtype)

    def _block(self, r0: int, c0: int, nr: int, nc: int, transform: object) -> Tensor:
        """Map cells [r0, r0 + nr) x [c0, c0 + nc) assembled from the held tiles."""
        tiles = self.tiles[transform]
        t = self.layout.tile
        first = next(iter(tiles.values()))
        block = first.new_zeros((first.shape[0], nr, nc))
        for tr in range(r0 // t, (r0 + nr - 1) // t + 1):
            for tc in range(c0 // t, (c0 + nc - 1) // t + 1):
                feats = tiles.get((tr, tc))
                if feats is None:
                    raise RuntimeError(f"internal error: context tile {(tr, tc)} is not held")
                a0, b0 = max(r0, tr * t), max(c0, tc * t)
                a1 = min(r0 + nr, tr * t + feats.shape[1])
                b1 = min(c0 + nc, tc * t + feats.shape[2])
                block[:, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = \
                    feats[:, a0 - tr * t:a1 - tr * t, b0 - tc * t:b1 - tc * t]
        return block
