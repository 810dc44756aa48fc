"""The training area of a raster, read as the segmentation engine reads it, with its labels.

The engine's rules apply unchanged (:func:`model_core.inference.engine.resolve_bands`,
:func:`model_core.inference.stretch.resolve_scaling`): the model's bands or the chosen ones, a
single band replicated to the model's channels, 8-bit data scaled by the card and other types
stretched per band from their 2-98 % cumulative cut of the whole raster onto the card's range,
so a model trained here sees the values segmenting the same raster feeds it. Stretched values
are stored as 8-bit when the card's range is 0..255 (what validation through the engine reads).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .data import LabelledImage
from .gis import (IGNORE, ClassList, Grid, LabelError, LabelSource, Labels, area_window,
                  label_bounds, rasterize_labels, transform_bounds, window_grid)

log = logging.getLogger(__name__)


@dataclass
class TrainingArea:
    """Pixels (C, H, W) as the network's scaling expects them, labels (H, W), their grid."""

    image: np.ndarray
    labels: Labels
    grid: Grid
    window: tuple[int, int, int, int]
    bands: list[int]
    scaling: str                 # "model" (card scale) or "stretch"
    cuts: dict[int, tuple[float, float]]
    pixel_size_m: float | None          # of the training grid
    raster_pixel_size_m: float | None = None   # of the raster (differs with a pixel_size)

    @property
    def label(self) -> np.ndarray:
        return self.labels.label


def read_training_area(raster: str, source: LabelSource, *, in_chans: int,
                       card_bands: Sequence[int], card_scale: Sequence[float],
                       base_classes: ClassList | None = None, bands: Sequence[int] | None = None,
                       extent: Sequence[float] | None = None, extent_wkt: str | None = None,
                       strict: bool = False, max_side: int | None = None,
                       pixel_size: float | None = None) -> TrainingArea:
    """Read the area of ``raster`` under ``extent`` (in ``extent_wkt``; default: the labels'
    extent) and burn the labels onto it. ``strict``: labels must use the model's classes.

    ``pixel_size`` (metres; ``fctl:train``'s training pixel size): the area over the same ground
    on a grid of that pixel size: the pixels resampled as the engine resamples rasters (area
    average when coarser, cubic when finer), the labels burnt (or warped) onto that grid."""
    from ..inference.drawn import drawn_raster

    # the raster as QGIS draws it (colours of a palette, GCPs warped), where the labels were drawn
    colours = list(card_bands) == [1, 2, 3] and not bands
    with drawn_raster(str(raster), colours=colours) as path:
        return _read_area(raster, path, source, in_chans=in_chans, card_bands=card_bands,
                          card_scale=card_scale, base_classes=base_classes, bands=bands,
                          extent=extent, extent_wkt=extent_wkt, strict=strict,
                          max_side=max_side, pixel_size=pixel_size)


def _read_area(raster: str, path: str, source: LabelSource, *, in_chans: int,
               card_bands: Sequence[int], card_scale: Sequence[float],
               base_classes: ClassList | None, bands: Sequence[int] | None,
               extent: Sequence[float] | None, extent_wkt: str | None, strict: bool,
               max_side: int | None, pixel_size: float | None) -> TrainingArea:
    from ..ground import ground_of
    from ..inference.engine import resolve_bands
    from ..inference.reader import GdalReader
    from ..inference.stretch import resolve_scaling
    from .gis import MAX_SIDE

    try:
        reader = GdalReader(path)
    except (OSError, RuntimeError) as exc:
        raise FileNotFoundError(f"cannot open the raster {raster}: {exc}") from exc
    try:
        wkt = reader.crs_wkt or ""
        gt = tuple(reader.geotransform) if reader.has_geotransform else (0, 1, 0, 0, 0, 1)
        rgrid = Grid(gt, reader.width, reader.height, wkt)
        try:
            use = resolve_bands(list(bands) if bands else None, list(card_bands),
                                reader.band_count, in_chans, reader.color_interpretations)
        except ValueError as exc:
            raise LabelError(f"the model takes {in_chans} input bands and cannot read this "
                             f"raster: {exc}") from exc
        if extent is not None:
            bounds = transform_bounds(extent, extent_wkt or wkt, wkt)
            what = "extent"
        else:
            bounds = label_bounds(source, wkt)
            what = "labels' extent"
        window = area_window(rgrid, bounds, what, max_side or MAX_SIDE)
        ground = ground_of(gt, wkt, reader.width, reader.height) if wkt else None
        raster_m = ground.pixel_size_m if ground is not None else None
        grid = window_grid(rgrid, window)
        if pixel_size:
            grid = _training_grid(grid, raster_m, float(pixel_size), max_side or MAX_SIDE)
        labels = rasterize_labels(source, grid, base_classes, strict)
        scaling = resolve_scaling(None, card_scale, reader, use)
        x, y, w, h = window
        # 8-bit data in its own type (a quarter of float32's memory); stretched data as float
        image = np.asarray(reader.read_native(x, y, w, h, use) if scaling.source == "model"
                           else scaling.reader.read(x, y, w, h, use))
        valid = np.asarray(reader.valid(x, y, w, h, use), bool)
    finally:
        reader.close()
    image, valid = _finish(image, valid, scaling.source, card_scale)
    resampled = (grid.width, grid.height) != (window[2], window[3])   # a training pixel size
    if resampled:
        from ..resample import gdal_resize

        alg = "average" if grid.width < window[2] else "cubic"
        image = gdal_resize(image, grid.height, grid.width, alg)
        valid = gdal_resize(valid[None].astype(np.uint8), grid.height, grid.width,
                            "near")[0].astype(bool)
        log.info("training area resampled from %.3g m to %g m per pixel: %d x %d -> %d x %d px",
                 raster_m, pixel_size, window[2], window[3], grid.width, grid.height)
    labels.label[~valid] = IGNORE
    if not (labels.label != IGNORE).any():
        raise LabelError("no labelled pixel lies on valid pixels of the raster in the training "
                         "area: label areas of this raster (or check the extent)")
    return TrainingArea(image, labels, grid, window, use, scaling.source, dict(scaling.cuts),
                        float(pixel_size) if resampled else raster_m, raster_m)


def _training_grid(grid: Grid, raster_m: float | None, to_m: float, max_side: int) -> Grid:
    """``grid``'s ground on a grid of ``to_m`` metres per pixel (itself within 1 %)."""
    if to_m <= 0:
        raise LabelError(f"the training pixel size must be positive metres, got {to_m}")
    if not raster_m:
        raise LabelError("the raster's pixel size in metres is unknown (no georeferencing), so "
                         "it cannot be resampled to a training pixel size: leave the pixel size "
                         "at 0 (the raster's own)")
    if abs(to_m / raster_m - 1.0) < 0.01:
        return grid
    w, h = (max(1, round(v * raster_m / to_m)) for v in (grid.width, grid.height))
    if max(w, h) > max_side:
        raise LabelError(f"the training area would be {max(w, h)} px on its longer side at "
                         f"{to_m:g} m ({max(grid.width, grid.height)} px at {raster_m:.3g} m), "
                         f"over the {max_side} px limit: choose a smaller extent or a coarser "
                         "pixel size")
    gt = grid.geotransform
    sx, sy = grid.width / w, grid.height / h
    return Grid((gt[0], gt[1] * sx, gt[2] * sy, gt[3], gt[4] * sx, gt[5] * sy), w, h,
                grid.crs_wkt)


def _finish(image: np.ndarray, valid: np.ndarray, source: str, card_scale: Sequence[float]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Stretched (float) pixels as 8-bit when the card's range is 0..255; NaN = invalid."""
    if image.dtype.kind == "f":
        nan = ~np.isfinite(image).all(0)
        valid = valid & ~nan
        lo, hi = (float(v) for v in card_scale)
        image = np.where(np.isfinite(image), image, lo)
        if source == "stretch" and (lo, hi) == (0.0, 255.0):
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        else:
            image = image.astype(np.float32)
    return image, valid


def split_spatially(area: TrainingArea, fraction: float, patch: int, name: str = "area"
                    ) -> tuple[LabelledImage, LabelledImage | None, dict]:
    """Train and validation images: the validation part is a strip at the end of the area's
    longer side holding about ``fraction`` of its labelled pixels (at least one patch wide)."""
    img, lab = area.image, area.label
    c, h, w = img.shape
    if min(h, w) < patch:
        raise LabelError(f"the training area is {w} x {h} px, smaller than the {patch} px patch: "
                         "enlarge the extent or choose a smaller patch size")
    if fraction <= 0:
        return LabelledImage(name, img, lab), None, {"axis": None}
    axis = 2 if w >= h else 1            # split columns of a wide area, rows of a tall one
    length = img.shape[axis]
    if length < 2 * patch:
        reason = (f"the training area ({w} x {h} px) is too small to hold out a validation "
                  f"strip of at least one {patch} px patch: trained without validation (enlarge "
                  "the extent or choose a smaller patch size to get one)")
        log.warning("%s", reason)
        return LabelledImage(name, img, lab), None, {"axis": None, "note": reason}
    labelled = (lab != IGNORE)
    per_line = labelled.sum(axis=0) if axis == 2 else labelled.sum(axis=1)
    cum = np.cumsum(per_line)
    cut = int(np.searchsorted(cum, (1.0 - fraction) * cum[-1])) + 1
    cut = int(min(max(cut, patch), length - patch))
    if axis == 2:
        tr = LabelledImage(f"{name}_train", img[:, :, :cut], lab[:, :cut])
        va = LabelledImage(f"{name}_val", img[:, :, cut:], lab[:, cut:])
    else:
        tr = LabelledImage(f"{name}_train", img[:, :cut], lab[:cut])
        va = LabelledImage(f"{name}_val", img[:, cut:], lab[cut:])
    info = {"axis": "columns" if axis == 2 else "rows", "cut": cut,
            "val_labelled_share": round(float(1 - cum[cut - 1] / max(1, cum[-1])), 3)}
    if not (va.label != IGNORE).any():
        log.warning("the validation strip holds no labelled pixel: its scores are undefined")
    if not (tr.label != IGNORE).any():
        raise LabelError("all labelled pixels fall into the validation strip: label more areas "
                         "or choose a validation fraction of 0")
    return tr, va, info
