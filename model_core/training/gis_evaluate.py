"""Score a model on labelled GIS data: the raster's labelled area is segmented by the engine
exactly as ``fctl:segment`` runs (bands, scaling, pixel size) and compared with the labels burnt
onto the raster's grid (:mod:`.gis`): per-class IoU, F1 and accuracy, mIoU, pixel accuracy."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .evaluate import EvalItem, scorable
from .gis import IGNORE, LabelSource
from .metrics import Scores, confusion_matrix

log = logging.getLogger(__name__)


@dataclass
class LabelEvaluation:
    scores: Scores
    window: tuple[int, int, int, int]
    seconds: float
    model: str

    def rows(self) -> list[dict[str, Any]]:
        """One row per class of the model (IoU, F1, accuracy = recall, labelled pixels), then
        the means (class_id -1; accuracy = overall pixel accuracy)."""
        s = self.scores
        cm = s.confusion
        rows = []
        iou, f1 = s.iou, s.f1
        for c in s.classes:
            n = int(cm[c].sum())
            rows.append({"class_id": c, "class_name": s.names.get(c, str(c)), "iou": iou[c],
                         "f1": f1[c], "accuracy": float(cm[c, c] / n) if n else float("nan"),
                         "pixels": n})
        rows.append({"class_id": -1, "class_name": "mean", "iou": s.miou, "f1": s.mean_f1,
                     "accuracy": s.pixel_accuracy, "pixels": int(cm.sum())})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "window": list(self.window), "seconds": self.seconds,
                **self.scores.to_dict(), "classes": self.rows(),
                "confusion": self.scores.confusion.tolist()}

    def write_json(self, path: str | Path) -> None:
        def clean(v):
            if isinstance(v, float) and np.isnan(v):
                return None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            if isinstance(v, (np.integer, np.floating)):
                return clean(v.item())
            return v

        p = Path(path)
        tmp = p.with_name(p.name + ".part")
        tmp.write_text(json.dumps(clean(self.to_dict()), indent=2))
        tmp.replace(p)


def evaluate_labels(raster: str, labels: LabelSource, model: str | None = None, *,
                    bands: Sequence[int] | None = None,
                    extent: Sequence[float] | None = None, extent_wkt: str | None = None,
                    device: str = "auto", precision: str = "auto", batch_size: int = 0,
                    progress: Callable[[float, str], None] | None = None,
                    is_cancelled: Callable[[], bool] | None = None) -> LabelEvaluation:
    """Segment the labelled area of ``raster`` with ``model`` (None = bundled) and score it."""
    from osgeo import gdal

    from ..checkpoint import DEFAULT_MODEL, read_card
    from ..inference import segment
    from ..inference.options import SegmentOptions
    from .area import read_training_area

    path = str(model or DEFAULT_MODEL)
    card = read_card(path)
    classes = [(c.id, c.name, tuple(c.color)) for c in card.classes]
    area = read_training_area(raster, labels, in_chans=card.config.in_chans,
                              card_bands=card.bands, card_scale=card.scale, base_classes=classes,
                              bands=bands, extent=extent, extent_wkt=extent_wkt, strict=True)
    k = card.config.num_classes
    # the labelled pixels only (unlabelled ones are no class): the scores must not be empty
    scorable([EvalItem(Path(raster).stem, raster, area.label[area.label != IGNORE])], card)
    with tempfile.TemporaryDirectory(prefix="fctl_eval_") as tmp:
        out = str(Path(tmp) / "classes.tif")
        opts = SegmentOptions(input=str(raster), output=out, model=path, device=device,
                              precision=precision, batch_size=batch_size,
                              bands=list(bands) if bands else None, window=area.window)
        result = segment(opts, progress=progress, is_cancelled=is_cancelled)
        ds = gdal.Open(out)
        pred = ds.GetRasterBand(1).ReadAsArray()
        ogt = ds.GetGeoTransform()
        ds = None
    label = _aligned(area.label, area.grid.geotransform, pred, ogt)
    cm = confusion_matrix(label, pred, k, card.ignore_index)
    scores = Scores(cm, card.ignore_index, {c.id: c.name for c in card.classes})
    log.info("%s on %s: %s %.4f", card.name, raster, scores.headline_name, scores.headline)
    return LabelEvaluation(scores, area.window, round(result.seconds, 1), path)


def _aligned(label: np.ndarray, lgt: Sequence[float], pred: np.ndarray,
             pgt: Sequence[float]) -> np.ndarray:
    """``label`` on the grid of ``pred`` (same pixel size), IGNORE where it has no value."""
    dx = int(round((pgt[0] - lgt[0]) / lgt[1]))
    dy = int(round((pgt[3] - lgt[3]) / lgt[5]))
    out = np.full(pred.shape, IGNORE, np.uint8)
    h, w = pred.shape
    y0, x0 = max(0, dy), max(0, dx)
    y1, x1 = min(label.shape[0], dy + h), min(label.shape[1], dx + w)
    if y1 > y0 and x1 > x0:
        out[y0 - dy:y1 - dy, x0 - dx:x1 - dx] = label[y0:y1, x0:x1]
    return out
