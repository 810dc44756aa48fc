"""Segmentation metrics from a confusion matrix: per-class IoU and F1, mIoU, pixel accuracy.

The ignore class (e.g. DeepGlobe's "unknown") is excluded everywhere: pixels labelled with it are
not counted, and it is not a class of the mean. Classes absent from both labels and predictions
have no IoU (NaN) and are left out of the mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_index: int | None = None, valid: np.ndarray | None = None
                     ) -> np.ndarray:
    """(num_classes, num_classes) counts, rows = label, columns = prediction."""
    label = np.asarray(label).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if label.shape != pred.shape:
        raise ValueError(f"label and prediction differ in size ({label.size} vs {pred.size})")
    keep = (label >= 0) & (label < num_classes) & (pred >= 0) & (pred < num_classes)
    if ignore_index is not None:
        keep &= label != ignore_index
    if valid is not None:
        keep &= np.asarray(valid).ravel().astype(bool)
    idx = label[keep] * num_classes + pred[keep]
    return np.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


@dataclass
class Scores:
    """Scores of one confusion matrix; ``names`` maps class id -> name."""

    confusion: np.ndarray
    ignore_index: int | None = None
    names: dict[int, str] = field(default_factory=dict)

    @property
    def classes(self) -> list[int]:
        return [c for c in range(self.confusion.shape[0]) if c != self.ignore_index]

    def _per_class(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Predictions of the ignore class on labelled pixels count as errors (false negatives).
        cm = self.confusion.astype(np.float64)
        tp = np.diag(cm)
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
        return tp, fp, fn

    @property
    def iou(self) -> dict[int, float]:
        tp, fp, fn = self._per_class()
        with np.errstate(invalid="ignore", divide="ignore"):
            v = tp / (tp + fp + fn)
        return {c: float(v[c]) for c in self.classes}

    @property
    def f1(self) -> dict[int, float]:
        tp, fp, fn = self._per_class()
        with np.errstate(invalid="ignore", divide="ignore"):
            v = 2 * tp / (2 * tp + fp + fn)
        return {c: float(v[c]) for c in self.classes}

    @property
    def miou(self) -> float:
        vals = [v for v in self.iou.values() if not np.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def headline_name(self) -> str:
        """What :attr:`headline` is: "mIoU", or "<class> IoU" for a binary task."""
        if self._binary_foreground is None:
            return "mIoU"
        return f"{self.names.get(self._binary_foreground, str(self._binary_foreground))} IoU"

    @property
    def _binary_foreground(self) -> int | None:
        cls = self.classes
        return cls[1] if len(cls) == 2 and cls[0] == 0 else None

    @property
    def headline(self) -> float:
        """The figure a task is reported by: the foreground IoU of a background/object task (the
        paper's Inria "mIoU" is the building IoU), the mIoU otherwise."""
        fg = self._binary_foreground
        return self.iou[fg] if fg is not None else self.miou

    @property
    def mean_f1(self) -> float:
        vals = [v for v in self.f1.values() if not np.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    def to_dict(self) -> dict[str, Any]:
        name = lambda c: self.names.get(c, str(c))  # noqa: E731
        return {
            "miou": self.miou, "mean_f1": self.mean_f1, "pixel_accuracy": self.pixel_accuracy,
            "headline": self.headline, "headline_name": self.headline_name,
            "iou": {name(c): v for c, v in self.iou.items()},
            "f1": {name(c): v for c, v in self.f1.items()},
            "pixels": int(self.confusion.sum()),
        }

    def table(self, title: str = "") -> str:
        """A plain-text table: one row per class, then the means."""
        rows = [f"{title}" if title else ""]
        rows.append(f"{'class':<14}{'IoU':>8}{'F1':>8}")
        for c in self.classes:
            iou, f1 = self.iou[c], self.f1[c]
            rows.append(f"{self.names.get(c, str(c)):<14}{_pct(iou):>8}{_pct(f1):>8}")
        rows.append(f"{'mean':<14}{_pct(self.miou):>8}{_pct(self.mean_f1):>8}")
        rows.append(f"pixel accuracy {_pct(self.pixel_accuracy)}")
        if self.headline_name != "mIoU":
            rows.append(f"{self.headline_name} {_pct(self.headline)} (the reported figure)")
        return "\n".join(r for r in rows if r != "" or title)


def _pct(v: float) -> str:
    return "-" if np.isnan(v) else f"{100 * v:.2f}"
