"""The training area of a raster, read as the segmentation engine reads it, with its labels.

The engine's rules apply unchanged (:func:`model_core.inference.engine.resolve_bands`,
:func:`model_core.inference.stretch.resolve_scaling`): the model's bands or the chosen ones, a
single band replicated to the model's channels, 8-bit data scaled by the card and other types
stretched per band from their 2-98 % cumulative cut of the whole raster onto the card's range,
so a model trained here sees the values segmenting the same raster feeds it. Stretched values
are stored as 8-bit when the card's range is 0..255 (what validation through the engine reads).
"""

from __future__ import annotations

import dataclasses
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
    pixel_size_m: float | None

    @property
    def label(self) -> np.ndarray:
        return self.labels.label


def read_training_area(raster: str, source: LabelSource, *, in_chans: int,
                       card_bands: Sequence[int], card_scale: Sequence[float],
                       base_classes: ClassList | None = None, bands: Sequence[int] | None = None,
                       extent: Sequence[float] | None = None, extent_wkt: str | None = None,
                       strict: bool = False, max_side: int | None = None) -> TrainingArea:
    """Read the area of ``raster`` under ``extent`` (in ``extent_wkt``; default: the labels'
    extent) and burn the labels onto it. ``strict``: labels must use the model's classes."""
    from ..ground import ground_of
    from ..inference.engine import resolve_bands
    from ..inference.reader import GdalReader
    from ..inference.stretch import resolve_scaling
    from .gis import MAX_SIDE

    try:
        reader = GdalReader(raster)
    except (OSError, RuntimeError) as exc:
        raise FileNotFoundError(f"cannot open the raster {raster}: {exc}") from exc
    try:
        wkt = reader.crs_wkt or ""
        gt = tuple(reader.geotransform) if reader.has_geotransform else (0, 1, 0, 0, 0, 1)
        rgrid = Grid(gt, reader.width, reader.height, wkt)
        try:
            use = resolve_bands(list(bands) if bands else None, list(card_bands),
                                reader.band_count, in_chans)
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
        grid = window_grid(rgrid, window)
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
    labels.label[~valid] = IGNORE
    if not (labels.label != IGNORE).any():
        raise LabelError("no labelled pixel lies on valid pixels of the raster in the training "
                         "area: label areas of this raster (or check the extent)")
    ground = ground_of(gt, wkt, reader.width, reader.height) if wkt else None
    return TrainingArea(image, labels, grid, window, use, scaling.source, dict(scaling.cuts),
                        ground.pixel_size_m if ground is not None else None)


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


def resample_area(area: TrainingArea, to_m: float, max_side: int | None = None
                  ) -> TrainingArea:
    """``area`` at ``to_m`` metres per pixel (``fctl:train``'s training pixel size): pixels and
    labels resampled as the engine resamples rasters, the grid rescaled over the same ground."""
    from ..resample import resample_labelled
    from .gis import MAX_SIDE

    if not to_m or to_m <= 0:
        raise ValueError(f"the training pixel size must be positive metres, got {to_m}")
    from_m = area.pixel_size_m
    if not from_m:
        raise LabelError("the raster's pixel size in metres is unknown (no georeferencing), so "
                         "it cannot be resampled to a training pixel size: leave the pixel size "
                         "at 0 (the raster's own)")
    if abs(to_m / from_m - 1.0) < 0.01:
        return area
    h, w = area.label.shape
    limit = max_side or MAX_SIDE
    side = max(w, h) * from_m / to_m
    if side > limit:
        raise LabelError(f"the training area would be {round(side)} px on its longer side at "
                         f"{to_m:g} m (it is {max(w, h)} px at {from_m:.3g} m), over the "
                         f"{limit} px limit: choose a smaller extent or a coarser pixel size")
    image, label = resample_labelled(area.image, area.label, from_m, to_m)
    gt = area.grid.geotransform
    sx, sy = w / label.shape[1], h / label.shape[0]
    grid = dataclasses.replace(area.grid, width=label.shape[1], height=label.shape[0],
                               geotransform=(gt[0], gt[1] * sx, gt[2] * sy, gt[3], gt[4] * sx,
                                             gt[5] * sy))
    log.info("training area resampled from %.3g m to %g m per pixel: %d x %d -> %d x %d px",
             from_m, to_m, w, h, label.shape[1], label.shape[0])
    return dataclasses.replace(area, image=image, grid=grid, pixel_size_m=float(to_m),
                               labels=dataclasses.replace(area.labels, label=label))


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
