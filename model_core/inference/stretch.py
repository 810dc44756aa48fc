"""Input value ranges: which raw values the network sees as black and white.

An 8-bit (Byte) raster keeps the model card's ``scale`` (the raw range the model was trained on,
usually 0..255). Any other type (16-bit satellite imagery, floats, 32-bit integers) is stretched
the way QGIS's renderer shows it by default: per band, the 2 % and 98 % cumulative-count cut of
the band's histogram are mapped to the card's range, so the model sees the contrast a user sees
on the map. A model whose card declares a range beyond 8 bits (trained on raw 16-bit values) and
an explicit ``scale`` option are used as they are. The cut is computed once per run, from an
overview or whole blocks spread over the band (GDAL) or a bounded number of sampled windows
(other readers), so a 100,000 px raster costs a few million pixel reads; it is logged and
written into the output's metadata. Nothing is written next to the input (no .aux.xml).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .reader import WindowReader

log = logging.getLogger(__name__)

CUT_PERCENT = (2.0, 98.0)       # QGIS's default cumulative count cut
# Cuts are taken over about this many pixels: a whole band up to 4x this, else an overview of
# 1x-16x this, else whole blocks spread over the band (GDAL readers) or sampled windows.
SAMPLE_PIXELS = 1_000_000
SAMPLE_WINDOWS = 8              # sampled windows per side for readers without a histogram
SAMPLE_WINDOW_PX = 128


@dataclass
class InputScaling:
    """How raw values become the network's [0, 1] input.

    Attributes:
        scale: (lo, hi) the patch reader maps to [0, 1] (after the stretch, if any).
        reader: the reader to segment: the given one, or a :class:`StretchedReader` over it.
        source: 'option' (explicit scale), 'model' (the card's) or 'stretch'.
        cuts: band -> (raw 2 % value, raw 98 % value), for the stretch.
    """

    scale: tuple[float, float]
    reader: WindowReader
    source: str
    cuts: dict[int, tuple[float, float]] = field(default_factory=dict)

    def describe(self) -> str:
        lo, hi = self.scale
        if self.source != "stretch":
            what = "the scale option" if self.source == "option" else "the model's scale"
            return f"raw {lo:g}..{hi:g} -> [0, 1] ({what})"
        bands = ", ".join(f"band {b} {a:.6g}..{z:.6g}" for b, (a, z) in sorted(self.cuts.items()))
        return (f"cumulative count cut {CUT_PERCENT[0]:g}-{CUT_PERCENT[1]:g} %: {bands} "
                f"-> the model's {lo:g}..{hi:g}")

    def metadata(self) -> dict[str, str]:
        """GDAL metadata items for the output raster."""
        md = {"FCTL_INPUT_SCALING": self.source, "FCTL_INPUT_SCALE": f"{self.scale[0]:.9g} "
              f"{self.scale[1]:.9g}"}
        if self.cuts:
            md["FCTL_INPUT_STRETCH"] = (
                f"cumulative count cut {CUT_PERCENT[0]:g}-{CUT_PERCENT[1]:g} %")
            md["FCTL_INPUT_STRETCH_VALUES"] = ";".join(
                f"{b}:{a:.9g},{z:.9g}" for b, (a, z) in sorted(self.cuts.items()))
        return md


def resolve_scaling(requested: Sequence[float] | None, card_scale: Sequence[float],
                    reader: WindowReader, bands: Sequence[int]) -> InputScaling:
    """The input scaling of a run: ``requested`` (the scale option) if given, else the card's
    for Byte rasters and models trained beyond 8 bits, else a per-band 2-98 % stretch onto the
    card's range (computed here, once)."""
    if requested is not None:
        lo, hi = (float(v) for v in requested)
        if not hi > lo:
            raise ValueError(f"scale {tuple(requested)} is empty: give lo hi with hi > lo")
        scaling = InputScaling((lo, hi), reader, "option")
    else:
        lo, hi = (float(v) for v in card_scale)
        dtype = np.dtype(getattr(reader, "dtype", np.uint8))
        if dtype == np.uint8 or hi > 255.0:
            scaling = InputScaling((lo, hi), reader, "model")
        else:
            cuts = {b: _cut_or_card(reader, b, (lo, hi))
                    for b in sorted(set(int(b) for b in bands))}
            scaling = InputScaling((lo, hi), StretchedReader(reader, cuts, (lo, hi)), "stretch",
                                   cuts)
            log.info("%s raster: %s (pass --scale LO HI to override)", dtype, scaling.describe())
            return scaling
    log.info("input scaling: %s", scaling.describe())
    return scaling


def _cut_or_card(reader: WindowReader, band: int, card: tuple[float, float]
                 ) -> tuple[float, float]:
    cut = reader.cumulative_cut(band, *CUT_PERCENT)
    if cut is None:
        log.warning("band %d has no valid pixel to stretch: its values are scaled as the "
                    "model's %g..%g", band, *card)
        return card
    return cut


# --------------------------------------------------------------------------- cuts
def percentile_cut(values: np.ndarray, low: float, high: float) -> tuple[float, float] | None:
    """Values at the ``low`` and ``high`` percent of the cumulative count of ``values`` (the
    first value reaching each share, as a cumulative count cut on a histogram); None when
    empty. A constant band gets a range of 1, so the mapping stays defined."""
    if values.size == 0:
        return None
    lo, hi = (float(q) for q in np.percentile(values, [low, high], method="inverted_cdf"))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def valid_values(arr: np.ndarray, nodata: float | None) -> np.ndarray:
    """The finite values of ``arr`` other than ``nodata``, flattened."""
    v = np.asarray(arr).ravel()
    keep = np.isfinite(v) if v.dtype.kind == "f" else np.ones(v.shape, bool)
    if nodata is not None and not math.isnan(nodata):
        keep &= v != np.asarray(nodata).astype(v.dtype)
    return v[keep]


def sample_windows(width: int, height: int, block: tuple[int, int], budget: int
                   ) -> list[tuple[int, int, int, int]]:
    """Windows (x, y, w, h) of whole ``block`` (bw, bh) cells spread evenly over the raster,
    about ``budget`` pixels in all (at least 16 blocks): what a sampled histogram reads."""
    bw, bh = max(1, min(block[0], width)), max(1, min(block[1], height))
    nbx, nby = -(-width // bw), -(-height // bh)
    n = int(min(max(budget // (bw * bh), 16), nbx * nby))
    cols = min(nbx, max(1, int(round(math.sqrt(n * nbx / nby)))))
    rows = min(nby, max(1, n // cols))
    xs = np.unique(np.linspace(0, nbx - 1, cols).round().astype(int))
    ys = np.unique(np.linspace(0, nby - 1, rows).round().astype(int))
    return [(int(i) * bw, int(j) * bh, min(bw, width - int(i) * bw), min(bh, height - int(j) * bh))
            for j in ys for i in xs]


def sampled_cut(reader: WindowReader, band: int, low: float, high: float
                ) -> tuple[float, float] | None:
    """Cut values from full-resolution windows of any reader: the whole raster up to
    :data:`SAMPLE_PIXELS`, else :data:`SAMPLE_WINDOWS` squared windows of
    :data:`SAMPLE_WINDOW_PX` px spread over it (bounded cost whatever the raster's size)."""
    w, h = reader.width, reader.height
    if w * h <= SAMPLE_PIXELS:
        windows = [(0, 0, w, h)]
    else:
        sw, sh = min(SAMPLE_WINDOW_PX, w), min(SAMPLE_WINDOW_PX, h)
        xs = np.linspace(0, w - sw, SAMPLE_WINDOWS).astype(int)
        ys = np.linspace(0, h - sh, SAMPLE_WINDOWS).astype(int)
        windows = sorted({(int(x), int(y), sw, sh) for y in ys for x in xs})
    nd = reader.nodata[band - 1] if reader.nodata else None
    values = [valid_values(reader.read(x, y, ww, wh, [band])[0], nd)
              for x, y, ww, wh in windows]
    return percentile_cut(np.concatenate(values), low, high)


# --------------------------------------------------------------------------- reader
class StretchedReader(WindowReader):
    """``reader`` with each band's cut values mapped linearly onto ``target`` (lo, hi).

    Values are float32 (not clipped: the patch reader clips after its own area means, as for
    unstretched rasters); the source's nodata values become NaN, which the patch reader treats
    as nodata. Other attributes (path, overviews, ...) are the source's.
    """

    def __init__(self, reader: WindowReader, cuts: dict[int, tuple[float, float]],
                 target: tuple[float, float]) -> None:
        self._inner = reader
        self.cuts = dict(cuts)
        self.target = (float(target[0]), float(target[1]))
        t0, t1 = self.target
        # per band: out = raw * gain + offset, with cut lo -> t0 and cut hi -> t1
        self._affine = {b: ((t1 - t0) / (hi - lo), t0 - lo * (t1 - t0) / (hi - lo))
                        for b, (lo, hi) in self.cuts.items()}
        self.width, self.height = reader.width, reader.height
        self.band_count = reader.band_count
        self.geotransform = reader.geotransform
        self.crs_wkt = reader.crs_wkt
        self._source_nodata = list(reader.nodata or [None] * reader.band_count)
        self.nodata = [None] * reader.band_count
        self.dtype = np.dtype(np.float32)

    def __getattr__(self, name: str):
        # only reached for attributes not set here: has_geotransform, path, overviews, ...
        if name.startswith("__") or name == "_inner":
            raise AttributeError(name)
        return getattr(self._inner, name)

    def read(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int],
             out_w: int | None = None, out_h: int | None = None) -> np.ndarray:
        arr = np.asarray(self._inner.read(xoff, yoff, xsize, ysize, bands, out_w, out_h),
                         np.float32)
        if not arr.flags.writeable:
            arr = arr.copy()
        for i, b in enumerate(bands):
            plane = arr[i]
            nd = self._source_nodata[int(b) - 1]
            bad = None
            if nd is not None and not math.isnan(nd):
                bad = plane == np.float32(nd)
            gain, offset = self._affine.get(int(b), (1.0, 0.0))
            plane *= np.float32(gain)
            plane += np.float32(offset)
            if bad is not None and bad.any():
                plane[bad] = np.nan
        return arr

    def valid(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]
              ) -> np.ndarray:
        return self._inner.valid(xoff, yoff, xsize, ysize, bands)

    def reopen(self) -> "StretchedReader | None":
        other = self._inner.reopen()
        return None if other is None else StretchedReader(other, self.cuts, self.target)

    def close(self) -> None:
        self._inner.close()
