"""The one context resampler: area averaging, as GDAL's ``average`` read computes it.

Contexts reach the network resized to the patch size. The inference engine reads them with GDAL's
averaging (``GRIORA_Average``: each output pixel is the mean of the source pixels it covers,
weighted by the covered fraction of each, and rounded half away from zero for integer rasters).
Training cuts contexts out of images held in memory; :func:`area_average` gives the same values,
so the network sees the same kind of context in training and in use.
"""

from __future__ import annotations

import numpy as np


def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix whose row i averages the input cells that output cell i covers,
    each weighted by the covered length (rows sum to 1)."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo, hi = edges[:-1], edges[1:]
    cells = np.arange(n_in, dtype=np.float64)
    cover = np.clip(np.minimum(hi[:, None], cells[None] + 1) - np.maximum(lo[:, None], cells[None]),
                    0.0, None)
    return cover / cover.sum(axis=1, keepdims=True)


def area_average(image: np.ndarray, out_h: int, out_w: int, integer: bool | None = None
                 ) -> np.ndarray:
    """Area-average (C, H, W) ``image`` to (C, out_h, out_w) float32.

    ``integer`` (default: whether ``image`` has an integer dtype) rounds the means half away from
    zero as GDAL does for integer rasters; pass True for integer values held in a float array.
    """
    c, h, w = image.shape
    if integer is None:
        integer = bool(np.issubdtype(image.dtype, np.integer))
    if (h, w) == (out_h, out_w):
        return image.astype(np.float32, copy=False)
    wy, wx = area_weights(h, out_h), area_weights(w, out_w)
    out = np.empty((c, out_h, out_w), np.float64)
    for b in range(c):   # band by band: one float64 copy of a band at a time
        out[b] = wy @ image[b].astype(np.float64, copy=False) @ wx.T
    if integer:
        # tiny tolerance: exact means like 2.5 come out of the products as 2.4999999999999996
        out = np.sign(out) * np.floor(np.abs(out) + 0.5 + 1e-9)
    return out.astype(np.float32)


def gdal_resize(image: np.ndarray, out_h: int, out_w: int, alg: str) -> np.ndarray:
    """(C, H, W) ``image`` resized by GDAL with ``alg`` ("average", "cubic", "near"...), as the
    engine's resampled reads compute it (same dtype; for training data held in memory)."""
    from osgeo import gdal, gdal_array

    c, h, w = image.shape
    src = gdal.GetDriverByName("MEM").Create(
        "", w, h, c, gdal_array.NumericTypeCodeToGDALTypeCode(image.dtype))
    for b in range(c):
        src.GetRasterBand(b + 1).WriteArray(image[b])
    out = gdal.Translate("", src, format="MEM", width=out_w, height=out_h, resampleAlg=alg)
    return out.ReadAsArray().reshape(c, out_h, out_w)


def resample_labelled(image: np.ndarray, label: np.ndarray, from_m: float, to_m: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) ``image`` and (H, W) ``label`` taken from ``from_m`` to ``to_m`` metres per
    pixel as the engine resamples rasters: area average when coarser, cubic when finer; labels
    nearest."""
    h, w = label.shape
    out_w, out_h = (max(1, round(v * from_m / to_m)) for v in (w, h))
    alg = "average" if to_m > from_m else "cubic"
    return (gdal_resize(image, out_h, out_w, alg),
            gdal_resize(label[None], out_h, out_w, "near")[0])


def coarser_view(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` as the engine sees imagery captured ``factor`` times coarser: averaged down by
    ``factor``, then enlarged back to its size with cubic resampling (the engine's enlarging read)."""
    c, h, w = image.shape
    small = gdal_resize(image, max(1, round(h / factor)), max(1, round(w / factor)), "average")
    return gdal_resize(small, h, w, "cubic")
