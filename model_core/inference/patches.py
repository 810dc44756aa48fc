"""Reading a batch: local patches I, their medium/large contexts M and L, boxes and validity.

Every window comes from :mod:`model_core.geometry`. Context windows are centred on the patch and
snapped to whole pixels; the part outside the raster is black (0), so the patch's box stays
centred, as in the reference code, which pads the image before cutting contexts. Contexts inside
the raster are read with decimated reads straight to the patch size (a 1524 px context of a
508 px patch reads about 508^2 values, not 1524^2); one crossing the border is padded at full
resolution and then box-filtered, which gives the values the padded image would (for 8 and
16-bit integer rasters without nodata whose scale clips nothing, from exact integer block sums:
the same to float rounding at 3x the speed). The global context (the whole raster, padded to at
least one patch) is read once per run. Raw values are scaled to [0, 1] as (raw - lo) / (hi - lo),
clipped; nodata and NaN become 0. Windows at full resolution are read in the source's integer
type (a quarter of GDAL's float32 traffic) and scaled without the clipping passes where the
type's range cannot clip: bit for bit the float32 path's values.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..geometry import Window, box_in, context_window
from .context_map import SharedContextLayout, TileLoad
from .decimate import accumulator, block_sums
from .plan import Patch
from .reader import WindowReader

# Largest border-crossing window padded at full resolution (larger ones are read decimated).
MAX_PADDED_PIXELS = 4096 * 4096


@dataclass
class Batch:
    """Inputs of one forward pass, as numpy arrays (B = len(patches)).

    ``local`` and ``contexts`` are in [0, 1], (B, C, P, P); ``boxes[name]`` (B, 4) is where each
    patch lies in its ``name`` context (every context stream, the cached global one included);
    ``valid`` (B, P, P) is False on nodata and outside the raster; ``shared[name]`` carries the
    tiles of a context whose features are shared across patches (then not in ``contexts``).
    """

    patches: list[Patch]
    local: np.ndarray
    contexts: dict[str, np.ndarray]
    boxes: dict[str, np.ndarray]
    valid: np.ndarray
    shared: dict[str, TileLoad] = field(default_factory=dict)

    @property
    def empty(self) -> np.ndarray:
        """(B,) True for patches without a single valid pixel (their forward is skipped)."""
        return ~self.valid.reshape(len(self.patches), -1).any(axis=1)


@dataclass
class Prepared:
    """A batch planned in run order (:meth:`PatchSource.prepare`), not read yet."""

    patches: list[Patch]
    shared: dict[str, TileLoad]


class PatchSource:
    """Reads patches and contexts of ``reader`` for a model.

    Args:
        reader: the raster.
        bands: 1-based bands fed to the network, in order (repeats allowed: 1, 1, 1).
        scale: raw (lo, hi) mapped to [0, 1], clipped.
        patch_size: P.
        streams: context name -> spec ("x3", "1524", "global") for the contexts the model needs.
    """

    def __init__(self, reader: WindowReader, bands: Sequence[int], scale: tuple[float, float],
                 patch_size: int, streams: dict[str, str]) -> None:
        self._reader = reader
        self._local = threading.local()
        self.bands = [int(b) for b in bands]
        self.lo, self.hi = float(scale[0]), float(scale[1])
        self.p = int(patch_size)
        self.streams = dict(streams)
        w, h = reader.width, reader.height
        # The global context: the whole raster, padded to at least one patch (tiny rasters)
        # so that every patch's box lies inside it.
        self.global_window = context_window(Window(0, 0, self.p, self.p), "global", self.p,
                                            (max(w, self.p), max(h, self.p)))
        nodata = [reader.nodata[b - 1] if reader.nodata else None for b in self.bands]
        # (band index, value) of the nodata values that can match a pixel (NaN is found apart)
        self._nodata_checks = [(i, np.float32(nd)) for i, nd in enumerate(nodata)
                               if nd is not None and not math.isnan(nd)]
        self._unclipped_types: dict[np.dtype, bool] = {}
        self._float_source = not np.issubdtype(np.dtype(getattr(reader, "dtype", np.float32)),
                                               np.integer)
        # Contexts whose features are shared across patches (set by the engine): their tiles
        # are read instead of one window per patch.
        self.shared: dict[str, SharedContextLayout] = {}

    @property
    def global_streams(self) -> list[str]:
        return [n for n, s in self.streams.items() if str(s).lower() == "global"]

    # ------------------------------------------------------------------ windows
    def context_window(self, patch: Window, name: str) -> Window:
        """The ``name`` context of ``patch``, snapped to whole pixels."""
        spec = self.streams[name]
        if str(spec).lower() == "global":
            return self.global_window
        win = context_window(patch, spec, self.p, (self.reader.width, self.reader.height))
        w, h = round(win.w), round(win.h)
        cx, cy = patch.x + patch.w / 2, patch.y + patch.h / 2
        return Window(float(math.floor(cx - w / 2 + 0.5)), float(math.floor(cy - h / 2 + 0.5)),
                      float(w), float(h))

    # ------------------------------------------------------------------ reads
    def global_image(self) -> np.ndarray:
        """The global context resized to (C, P, P), in [0, 1]."""
        return self.image(self.global_window, self.p, self.p)[0]

    # ------------------------------------------------------------------ threads
    @property
    def reader(self) -> WindowReader:
        """The reader of the calling thread: its own handle (:meth:`use_reader`) or the source's."""
        return getattr(self._local, "reader", None) or self._reader

    def use_reader(self, reader: WindowReader) -> None:
        """Read through ``reader`` (another handle on the same raster) in the calling thread,
        so that reading threads never share a GDAL dataset."""
        self._local.reader = reader

    def load(self, patches: list[Patch]) -> Batch:
        """Read the inputs of ``patches``: :meth:`prepare`, then :meth:`fetch`."""
        return self.fetch(self.prepare(patches))

    def prepare(self, patches: list[Patch]) -> Prepared:
        """The run-order part of a batch (which shared tiles it brings and drops): call it for
        the batches in run order; their :meth:`fetch` calls may then run in parallel."""
        shared = {name: layout.plan([self.context_window(pt.window, name) for pt in patches])
                  for name, layout in self.shared.items()}
        return Prepared(list(patches), shared)

    def fetch(self, prepared: Prepared) -> Batch:
        """Read a prepared batch (only reads: safe in parallel, one reader per thread)."""
        patches = prepared.patches
        b, p, c = len(patches), self.p, len(self.bands)
        local = np.zeros((b, c, p, p), np.float32)
        valid = np.zeros((b, p, p), bool)
        read_streams = [n for n in self.streams
                        if n not in self.global_streams and n not in self.shared]
        contexts = {n: np.zeros((b, c, p, p), np.float32) for n in read_streams}
        boxes = {n: np.zeros((b, 4), np.float32) for n in self.streams}
        for i, patch in enumerate(patches):
            win = patch.window
            local[i], ok = self.image(win, p, p)
            valid[i] = ok & self._valid(win)
            local[i][:, ~valid[i]] = 0.0
            for name in self.streams:
                ctx = self.context_window(win, name)
                boxes[name][i] = box_in(win, ctx)
                if name in contexts:
                    contexts[name][i] = self.image(ctx, p, p)[0]
        shared = {name: self.shared[name].fill(load) for name, load in prepared.shared.items()}
        return Batch(list(patches), local, contexts, boxes, valid, shared)

    def read_context(self, win: Window, out_w: int, out_h: int) -> np.ndarray:
        """A context window resized to (C, out_h, out_w) (a tile of a shared context)."""
        return self.image(win, out_w, out_h)[0]

    def image(self, win: Window, out_w: int, out_h: int) -> tuple[np.ndarray, np.ndarray]:
        """An integral window resized to (C, out_h, out_w) in [0, 1], 0 outside the raster and
        on nodata; and where (out_h, out_w) holds valid values (meaningful unresized).

        Windows inside the raster use the reader's decimated read. A window crossing the border
        is padded with 0 at full resolution and then area-resized, exactly as the reference
        pads the image before cutting contexts (a padded window larger than
        :data:`MAX_PADDED_PIXELS` is instead read decimated and placed to within half a pixel).
        """
        w, h = self.reader.width, self.reader.height
        x0, y0, ww, wh = int(win.x), int(win.y), int(win.w), int(win.h)
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + ww, w), min(y0 + wh, h)
        same = (ww, wh) == (out_w, out_h)
        if (ix0, iy0, ix1, iy1) == (x0, y0, x0 + ww, y0 + wh):
            raw = self.reader.read_native(x0, y0, ww, wh, self.bands) if same else \
                self.reader.read(x0, y0, ww, wh, self.bands, out_w=out_w, out_h=out_h)
            return self._scaled(raw)
        c = len(self.bands)
        if ix1 <= ix0 or iy1 <= iy0:
            return np.zeros((c, out_h, out_w), np.float32), np.zeros((out_h, out_w), bool)
        inner_read = (ix0, iy0, ix1 - ix0, iy1 - iy0)
        if ww * wh > MAX_PADDED_PIXELS:
            return self._decimated_into_padding(win, out_w, out_h, inner_read)
        if ww % out_w == 0 and wh % out_h == 0:
            # Integral factors (1 included): only the output blocks that touch the raster are
            # built, the others average zeros; the same values at a fraction of the work.
            fx, fy = ww // out_w, wh // out_h
            a0, b0 = (ix0 - x0) // fx * fx, (iy0 - y0) // fy * fy
            a1, b1 = -(-(ix1 - x0) // fx) * fx, -(-(iy1 - y0) // fy) * fy
            raw = self.reader.read_native(*inner_read, self.bands)
            inner = (slice(iy0 - y0 - b0, iy1 - y0 - b0), slice(ix0 - x0 - a0, ix1 - x0 - a0))
            out = np.zeros((c, out_h, out_w), np.float32)
            blocks = (slice(None), slice(b0 // fy, b1 // fy), slice(a0 // fx, a1 // fx))
            ok = np.zeros((out_h, out_w), bool)
            if not same and self._exact_sums(raw.dtype):
                out[blocks] = self._padded_block_means(raw, inner, (b1 - b0, a1 - a0), fy, fx)
                return out, ok
            vals, valid = self._scaled(raw)
            part = np.zeros((c, b1 - b0, a1 - a0), np.float32)
            part[(slice(None), *inner)] = vals
            out[blocks] = part if same else _area_resize(part, (a1 - a0) // fx, (b1 - b0) // fy)
            if same:
                ok[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = valid
            return out, ok
        full = np.zeros((c, wh, ww), np.float32)
        inner = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
        full[(slice(None), *inner)] = self._scaled(
            self.reader.read_native(*inner_read, self.bands))[0]
        return _area_resize(full, out_w, out_h), np.zeros((out_h, out_w), bool)

    def _decimated_into_padding(self, win: Window, out_w: int, out_h: int,
                                inner_read: tuple[int, int, int, int]
                                ) -> tuple[np.ndarray, np.ndarray]:
        """A border-crossing window too large to pad at full resolution: its inside is read
        decimated and placed to within half an output pixel."""
        x0, y0, ww, wh = int(win.x), int(win.y), int(win.w), int(win.h)
        ix0, iy0, iw, ih = inner_read
        ix1, iy1 = ix0 + iw, iy0 + ih
        c = len(self.bands)
        out = np.zeros((c, out_h, out_w), np.float32)
        j0, j1 = _span(ix0 - x0, ix1 - x0, ww / out_w, out_w)
        i0, i1 = _span(iy0 - y0, iy1 - y0, wh / out_h, out_h)
        out[:, i0:i1, j0:j1] = self._scaled(self.reader.read(
            ix0, iy0, ix1 - ix0, iy1 - iy0, self.bands, out_w=j1 - j0, out_h=i1 - i0))[0]
        return out, np.zeros((out_h, out_w), bool)

    def _valid(self, win: Window) -> np.ndarray:
        """The reader's validity (P, P) of a local patch; False outside the raster."""
        w, h = self.reader.width, self.reader.height
        out = np.zeros((int(win.h), int(win.w)), bool)
        x0, y0 = int(win.x), int(win.y)
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + int(win.w), w), min(y0 + int(win.h), h)
        if ix1 > ix0 and iy1 > iy0:
            out[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = self.reader.valid(
                ix0, iy0, ix1 - ix0, iy1 - iy0, self.bands)
        return out

    def _unclipped(self, dtype: np.dtype) -> bool:
        """Whether every value of integer ``dtype`` scales into [0, 1] without clipping (the
        scaling is monotonic, so the type's two ends decide)."""
        dtype = np.dtype(dtype)
        if dtype in self._unclipped_types:
            return self._unclipped_types[dtype]
        info = np.iinfo(dtype)
        ends = np.subtract(np.array([info.min, info.max], np.float32), np.float32(self.lo),
                           dtype=np.float32)
        ends *= np.float32(1.0 / (self.hi - self.lo))
        self._unclipped_types[dtype] = bool(ends[0] >= 0.0 and ends[1] <= 1.0)
        return self._unclipped_types[dtype]

    def _exact_sums(self, dtype: np.dtype) -> bool:
        """Whether a window of ``dtype`` can be block-averaged from exact integer sums: an
        integer type, nothing clipped and no nodata, so that the mean of the scaled values is
        the scaled mean of the raw ones."""
        return (np.issubdtype(dtype, np.integer) and not self._nodata_checks
                and self._unclipped(dtype))

    def _padded_block_means(self, raw: np.ndarray, inner: tuple[slice, slice],
                            size: tuple[int, int], fy: int, fx: int) -> np.ndarray:
        """Block means of the scaled window, 0 (black) outside the raster, from exact integer
        sums: raw (C, h, w) lies at ``inner`` of a zero-padded (C, *size) region of whole
        blocks. sum(scale(v)) = (sum(v) - n lo) / (hi - lo) over the n in-raster pixels of a
        block, computed in float64 and rounded once. The float32 path (scale, pad, sum, divide)
        rounds at every step: the two differ by a few ulps (at most 3 measured, 1.8e-7), and
        this one is the exact mean rounded once, for about a fifth of the work."""
        c = raw.shape[0]
        acc = accumulator(raw.dtype, fy * fx)
        part = np.zeros((c, *size), acc)
        part[(slice(None), *inner)] = raw
        sums = block_sums(part, fy, fx, acc).astype(np.float64)
        if self.lo != 0.0:
            rows = np.zeros(size[0], np.float64)
            rows[inner[0]] = 1.0
            cols = np.zeros(size[1], np.float64)
            cols[inner[1]] = 1.0
            inside = np.outer(rows.reshape(-1, fy).sum(1), cols.reshape(-1, fx).sum(1))
            sums -= self.lo * inside
        sums *= 1.0 / ((self.hi - self.lo) * fy * fx)
        return sums.astype(np.float32)

    def _scaled(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw - lo) / (hi - lo) clipped to [0, 1], with nodata and NaN set to 0; and the
        (h, w) mask of pixels valid in every band."""
        x = np.subtract(raw, np.float32(self.lo), dtype=np.float32)
        x *= np.float32(1.0 / (self.hi - self.lo))
        if self._exact_sums(raw.dtype):
            # nothing to clip or mask: the same float32 values without those passes
            return x, np.ones(raw.shape[1:], bool)
        # np.clip's value, without its slow dispatch in numpy 1.x
        np.maximum(x, np.float32(0.0), out=x)
        np.minimum(x, np.float32(1.0), out=x)
        if not self._float_source and not self._nodata_checks:
            # integer sources hold no NaN (GDAL's float32 buffer is exact for them)
            return x, np.ones(raw.shape[1:], bool)
        bad = ~np.isfinite(raw) if self._float_source else np.zeros(raw.shape, bool)
        for i, nd in self._nodata_checks:
            bad[i] |= raw[i] == nd
        if bad.any():
            x[bad] = 0.0
        return x, ~bad.any(axis=0)


def _area_resize(x: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Box-filter resize (C, H, W) -> (C, out_h, out_w): block means for integral factors."""
    c, h, w = x.shape
    if h % out_h == 0 and w % out_w == 0:
        # numpy, not torch: this runs in the reading thread, and torch's thread pool there
        # would compete with the network's for the same cores. Columns, then rows, then the
        # division: the order of numpy's mean over axes (2, 4), bit for bit, 5x faster.
        fy, fx = h // out_h, w // out_w
        cols = x.reshape(c, h, out_w, fx)
        s = cols[..., 0].copy()
        for k in range(1, fx):
            s += cols[..., k]
        rows = s.reshape(c, out_h, fy, out_w)
        out = rows[:, :, 0].copy()
        for k in range(1, fy):
            out += rows[:, :, k]
        out /= np.float32(fy * fx)
        return out
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))[None]
    return torch.nn.functional.interpolate(t, size=(out_h, out_w), mode="area")[0].numpy()


def _span(a: float, b: float, scale: float, n: int) -> tuple[int, int]:
    """Output pixels [j0, j1) onto which window pixels [a, b) land at ``scale`` window px per
    output px: exact for integral scales, within half an output pixel otherwise."""
    j0 = min(max(int(math.floor(a / scale + 0.5)), 0), n - 1)
    j1 = min(max(int(math.floor(b / scale + 0.5)), j0 + 1), n)
    return j0, j1
