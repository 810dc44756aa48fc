"""``python -m model_core evaluate``: per-class IoU, mIoU (ignore class excluded), F1 and pixel
accuracy, with and without test-time augmentation.

Whole images are segmented through the streaming engine (:func:`model_core.inference.segment`),
exactly as users run it: the engine writes a classified GeoTIFF, which is read back and compared
with the labels.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .metrics import Scores, confusion_matrix

if TYPE_CHECKING:
    from ..checkpoint import ModelCard

log = logging.getLogger(__name__)


@dataclass
class EvalItem:
    """One image file and its labels (class ids on the image grid)."""

    id: str
    image: str
    label: np.ndarray


def segment_file(image: str, model, card: ModelCard, tta: bool, device: str = "auto",
                 batch_size: int = 4, workdir: str | Path | None = None,
                 shared_context: bool = True, precision: str = "auto",
                 is_cancelled: Callable[[], bool] | None = None) -> np.ndarray:
    """Class ids of ``image`` as the streaming engine writes them (read back from its GeoTIFF)."""
    from osgeo import gdal

    from ..inference import segment
    from ..inference.options import SegmentOptions

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        out = str(Path(tmp) / "classes.tif")
        opts = SegmentOptions(input=str(image), output=out, device=device, tta=tta,
                              batch_size=batch_size, shared_context=shared_context,
                              precision=precision)
        segment(opts, model=model, card=card, is_cancelled=is_cancelled)
        ds = gdal.Open(out)
        arr = ds.GetRasterBand(1).ReadAsArray()
        ds = None
    return arr


def evaluate(model_path: str | None, items: Sequence[EvalItem], tta_modes: Sequence[bool] = (False, True),
             device: str = "auto", batch_size: int = 4, model=None, card: ModelCard | None = None,
             shared_context: bool = True, precision: str = "auto") -> dict[str, Any]:
    """Scores of a model on ``items`` for each TTA mode: {"no_tta": {...}, "tta": {...}}."""
    if model is None:
        from ..checkpoint import load_checkpoint

        model, card = load_checkpoint(model_path, "cpu")
    assert card is not None
    k = card.config.num_classes
    names = {c.id: c.name for c in card.classes}
    items = scorable(items, card)
    results: dict[str, Any] = {"model": model_path or "default", "images": [i.id for i in items]}
    for tta in tta_modes:
        cm = np.zeros((k, k), np.int64)
        per_image = {}
        t0 = time.time()
        for it in items:
            pred = segment_file(it.image, model, card, tta, device, batch_size,
                                shared_context=shared_context, precision=precision)
            if pred.shape != it.label.shape:
                raise ValueError(f"{it.id}: prediction {pred.shape} and labels {it.label.shape} "
                                 "differ in size")
            c = confusion_matrix(it.label, pred, k, card.ignore_index)
            per_image[it.id] = Scores(c, card.ignore_index, names).headline
            cm += c
        scores = Scores(cm, card.ignore_index, names)
        results["tta" if tta else "no_tta"] = {**scores.to_dict(), "per_image_miou": per_image,
                                               "seconds": round(time.time() - t0, 1),
                                               "confusion": cm.tolist()}
        log.info("%s: %s %.4f", "TTA" if tta else "no TTA", scores.headline_name,
                 scores.headline)
    return results


def scorable(items: Sequence[EvalItem], card: "ModelCard") -> list[EvalItem]:
    """``items`` checked against the model's classes before anything is segmented.

    A binary mask of only 0 and 255 (Inria, SpaceNet and most building masks) scored by a
    two-class model is read as classes 0 and 1. Labels with no pixel of a scored class (a building mask
    against the bundled land-cover model) raise a ValueError naming the values found and the
    classes expected: the scores would be empty. Other values outside the classes are logged
    and left unscored."""
    from .gis import binary_mask

    k, ignore = card.config.num_classes, card.ignore_index
    counts: dict[int, int] = {}
    for it in items:
        values, n = np.unique(it.label, return_counts=True)
        for v, c in zip(values.tolist(), n.tolist()):
            counts[v] = counts.get(v, 0) + c
    if binary_mask(np.array(list(counts)), [(c.id, c.name, c.color) for c in card.classes],
                   strict=True):
        # 255 is also the fine-tuned cards' "unlabelled", but labels of only 0 and unlabelled
        # would score one class: a 0/255 raster for a two-class model is a binary mask
        log.info("the labels are a 0/255 mask: read as the model's classes 0 (%s) and 1 (%s) "
                 "(if 255 marks unlabelled pixels instead, give them another value)",
                 *[c.name for c in sorted(card.classes, key=lambda c: c.id)][:2])
        items = [EvalItem(it.id, it.image, np.where(it.label == 255, 1, it.label).astype(
            it.label.dtype)) for it in items]
        counts = {0: counts.get(0, 0), 1: counts[255]}
    scored = sum(c for v, c in counts.items() if v < k and v != ignore)
    classes = ", ".join(f"{c.id} {c.name}" for c in sorted(card.classes, key=lambda c: c.id))
    found = ", ".join(f"{v} ({c:,} px)" for v, c in sorted(counts.items())[:12])
    if scored == 0:
        raise ValueError(
            f"the labels hold no pixel of a class the model scores: they hold {found}; the "
            f"model's classes are {classes}" + (f" ({ignore} not scored)" if ignore is not None
                                                else "") + ". Give labels with the model's "
            "class ids, or evaluate a model trained for these labels (train / fctl:train)")
    outside = sorted(v for v in counts if v >= k and v != ignore)
    if outside:
        log.warning("label values %s are not classes of the model (0-%d): their pixels are not "
                    "scored", outside, k - 1)
    return list(items)


def format_results(results: dict[str, Any]) -> str:
    """Table of per-class IoU and F1 for each evaluated TTA mode."""
    modes = [m for m in ("no_tta", "tta") if m in results]
    classes = list(results[modes[0]]["iou"])
    head = f"{'class':<14}" + "".join(f"{m + ' IoU':>12}{m + ' F1':>11}" for m in modes)
    rows = [head]
    for c in classes:
        rows.append(f"{c:<14}" + "".join(
            f"{_pct(results[m]['iou'][c]):>12}{_pct(results[m]['f1'][c]):>11}" for m in modes))
    rows.append(f"{'mean':<14}" + "".join(
        f"{_pct(results[m]['miou']):>12}{_pct(results[m]['mean_f1']):>11}" for m in modes))
    rows.append(f"{'pixel acc.':<14}" + "".join(
        f"{_pct(results[m]['pixel_accuracy']):>12}{'':>11}" for m in modes))
    if results[modes[0]].get("headline_name", "mIoU") != "mIoU":
        rows.append(f"{results[modes[0]]['headline_name']:<14}" + "".join(
            f"{_pct(results[m]['headline']):>12}{'':>11}" for m in modes))
    return "\n".join(rows)


def _pct(v: float) -> str:
    return "-" if v is None or np.isnan(v) else f"{100 * v:.2f}"


def items_from_args(args: argparse.Namespace) -> list[EvalItem]:
    """Image files + labels of the split chosen on the command line."""
    from .data import load_deepglobe, load_inria, load_raster_pair, parse_ids
    from .datasets import DEEPGLOBE_SPLIT

    if args.layout in ("deepglobe", "inria"):
        if not args.root or not Path(args.root).is_dir():
            raise FileNotFoundError(f"--root {args.root!r} is not a dataset folder")
        ids = parse_ids(args.ids) or (DEEPGLOBE_SPLIT[args.split] if args.layout == "deepglobe"
                                      else None)
        if not ids:
            raise ValueError("give the ids to evaluate with --ids")
        if args.layout == "deepglobe":
            return [EvalItem(im.id, str(Path(args.root) / f"{im.id}_sat.jpg"), im.label)
                    for im in load_deepglobe(args.root, ids)]
        return [EvalItem(im.id, str(Path(args.root) / "images" / f"{im.id}.tif"), im.label)
                for im in load_inria(args.root, ids)]
    if not args.image or len(args.image) != len(args.labels):
        raise ValueError("raster layout: give one --labels per --image")
    return [EvalItem(Path(i).stem, i, load_raster_pair(i, lab, field=args.field).label)
            for i, lab in zip(args.image, args.labels)]


def record_scores(model_path: str | None, key: str, results: dict[str, Any]) -> None:
    """Store the scores (without confusion matrices) in the checkpoint's provenance, rewriting
    the file atomically; the weights are unchanged."""
    from ..checkpoint import load_checkpoint, save_checkpoint

    if not model_path:
        raise ValueError("--record needs an explicit --model file to rewrite")
    model, card = load_checkpoint(model_path, "cpu")
    slim = {m: {k: v for k, v in results[m].items() if k != "confusion"}
            for m in ("no_tta", "tta") if m in results}
    card.provenance = {**card.provenance, key: {"images": results["images"], **slim}}
    save_checkpoint(model_path, model, card)


def run_evaluate(args: argparse.Namespace) -> int:
    items = items_from_args(args)
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.tta]
    res = evaluate(args.model, items, modes, args.device, args.batch_size,
                   shared_context=not args.exact_context, precision=args.precision)
    print(format_results(res))
    if args.record:
        record_scores(args.model, args.record, res)
        print(f"scores recorded in the card of {args.model} under provenance[{args.record!r}]")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"written {args.json}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..inference.option_table import option

    p = sub.add_parser("evaluate", help="score a model on labelled images (through the engine)")
    p.add_argument("--model", help="checkpoint (default: the bundled model)")
    p.add_argument("--layout", choices=("deepglobe", "inria", "raster"), default="deepglobe")
    p.add_argument("--root", help="dataset folder")
    p.add_argument("--split", default="test", choices=("train", "val", "test"),
                   help="DeepGlobe split of the data README when --ids is not given")
    p.add_argument("--ids", help="ids to evaluate: comma-separated or a text file")
    p.add_argument("--image", action="append", default=[], help="raster layout: image")
    p.add_argument("--labels", action="append", default=[], help="raster layout: labels")
    p.add_argument("--field", help="class field of polygon label layers (without it every "
                                   "polygon is class 1 and the rest class 0)")
    p.add_argument("--tta", choices=("off", "on", "both"), default="both")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="number format of the network, as segment --precision")
    # the same default as segment (shared medium context); --exact-context = the paper's
    p.add_argument("--exact-context", action="store_true",
                   help=option("exact_context").help.replace("%", "%%"))
    p.add_argument("--shared-context", action="store_true", help=argparse.SUPPRESS)  # former
    p.add_argument("--json", help="write the scores as JSON here")
    p.add_argument("--record", metavar="KEY",
                   help="also store the scores in the model's card under provenance[KEY]")
    p.set_defaults(func=run_evaluate)
