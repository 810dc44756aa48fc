"""Fine-tune an FCtL model on labelled GIS data: a raster plus polygons or a label raster.

The base model (default: the bundled one) gives the architecture, bands, scaling and weights: the
encoder and context modules are reused; the classifier (every tensor whose shape depends on the
number of classes) is kept when the classes are the base model's, and otherwise starts from the
base model's closest classes (:mod:`.class_map`); the starting weights are validated too, so the
result never scores below them on the validation strip. The training area
is split spatially (:func:`.area.split_spatially`), the model is trained with
:func:`.loop.train` (best validation checkpoint kept) and written with a full card.

Resolution: the model is trained at the raster's own pixel size, or at ``pixel_size`` metres
when asked (the area resampled as the engine resamples rasters), which its card records as
``gsd``: segmenting imagery then reads it at that pixel size (the engine's automatic pixel size).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .gis import IGNORE, LabelSource

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
DEFAULT_STEPS = 200
DEFAULT_LR = 2e-4
CLASSIFIER_KEPT = "kept (the base model's classes)"
CLASSIFIER_MAPPED = "initialised from the base model's closest classes"


@dataclass
class FineTuneOptions:
    """One fine-tuning run; ``output`` is the .safetensors file to write."""

    raster: str
    labels: LabelSource
    output: str
    base_model: str | None = None
    bands: list[int] | None = None
    extent: tuple[float, float, float, float] | None = None
    extent_wkt: str | None = None
    steps: int = DEFAULT_STEPS
    patch_size: int | None = None
    learning_rate: float = DEFAULT_LR
    validation_fraction: float = 0.2
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    threads: int | None = None
    log_csv: str | None = None
    plot_png: str | None = None
    max_side: int | None = None
    # metres per pixel to train at (None: the raster's own); the card records it, so fctl:segment
    # later reads imagery at that pixel size
    pixel_size: float | None = None


@dataclass
class FineTuneResult:
    output: str
    validation_miou: float
    validation: dict[str, Any] | None
    seconds: float
    steps: int
    classes: list[tuple[int, str, tuple[int, int, int]]]
    classifier: str
    log_csv: str | None = None
    plot_png: str | None = None
    notes: list[str] = field(default_factory=list)


def check_output(path: str, suffix: str, what: str) -> None:
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise ValueError(f"the {what} must be a {suffix} file, got {path}")
    folder = p.resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"the {what} folder {folder} does not exist: create it or choose "
                                "another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"the {what} folder {folder} is not writable: choose another path")


def epochs_for(steps: int) -> int:
    """Validation points: up to 10 epochs of at least 20 steps that divide ``steps``."""
    for e in range(10, 1, -1):
        if steps % e == 0 and steps // e >= 20:
            return e
    return 1


def fine_tune(opts: FineTuneOptions, progress: ProgressFn | None = None,
              is_cancelled: CancelFn | None = None) -> FineTuneResult:
    """Run ``opts``; raises ValueError (bad input, the remedy in the message), OSError, or
    :class:`~model_core.inference.options.Cancelled` (nothing written)."""
    from ..checkpoint import DEFAULT_MODEL, load_checkpoint, read_card, save_checkpoint
    from ..inference.options import Cancelled
    from .area import read_training_area, split_spatially
    from .loop import DataInfo, TrainConfig, train

    report = progress or (lambda f, m: None)
    cancelled = is_cancelled or (lambda: False)
    t0 = time.perf_counter()
    check_output(opts.output, ".safetensors", "model file")
    for path, suffix, what in ((opts.log_csv, ".csv", "training log"),
                               (opts.plot_png, ".png", "training plot")):
        if path:
            check_output(path, suffix, what)
    if opts.steps < 1:
        raise ValueError(f"steps must be at least 1, got {opts.steps}")
    if not 0.0 <= opts.validation_fraction <= 0.5:
        raise ValueError(f"the validation fraction must be within 0..0.5, got "
                         f"{opts.validation_fraction}")
    base_path = str(opts.base_model or DEFAULT_MODEL)
    base = read_card(base_path)
    base_classes = [(c.id, c.name, tuple(c.color)) for c in base.classes]
    report(0.01, "reading the training area")
    area = read_training_area(
        opts.raster, opts.labels, in_chans=base.config.in_chans, card_bands=base.bands,
        card_scale=base.scale, base_classes=base_classes, bands=opts.bands, extent=opts.extent,
        extent_wkt=opts.extent_wkt, max_side=opts.max_side, pixel_size=opts.pixel_size)
    raster_pixel_m = area.raster_pixel_size_m
    if area.pixel_size_m != raster_pixel_m:
        report(0.02, f"training at {area.pixel_size_m:g} m per pixel (the raster: "
                     f"{raster_pixel_m:.3g} m): {area.label.shape[1]} x {area.label.shape[0]} px")
    labels = area.labels
    patch = int(opts.patch_size or base.config.patch_size)
    if patch < 32 or patch % 2:
        raise ValueError(f"the patch size must be an even number of pixels, at least 32; got "
                         f"{patch}")
    stem = Path(opts.raster).stem
    train_img, val_img, split = split_spatially(area, opts.validation_fraction, patch, stem)
    if split.get("note"):
        report(0.02, split["note"])
    keep = labels.matched_base and labels.num_classes == base.config.num_classes
    config = dataclasses.replace(base.config, num_classes=labels.num_classes, patch_size=patch)
    classifier = CLASSIFIER_KEPT if keep else CLASSIFIER_MAPPED
    shown = [c for c in labels.classes if (area.label == c[0]).any()]
    log.info("training area %s px (window %s), classes %s, classifier %s",
             area.image.shape[1:], area.window, [n for _, n, _ in labels.classes], classifier)
    report(0.03, f"training area {area.window[2]} x {area.window[3]} px, "
                 f"{len(shown)} labelled classes; classifier {classifier}")
    if cancelled():
        raise Cancelled("training cancelled before it started")

    epochs = epochs_for(opts.steps)
    per_epoch = opts.steps // epochs
    tc = TrainConfig(epochs=epochs, steps_per_epoch=per_epoch, batch_size=opts.batch_size,
                     accumulate=1, lr=opts.learning_rate, seed=opts.seed, device=opts.device,
                     amp=opts.precision != "fp32", pretrained=None, threads=opts.threads,
                     validate_start=True)
    source = {"raster": str(opts.raster), "window": list(area.window),
              "labels": str(opts.labels.path), "layer": opts.labels.layer,
              "class_field": opts.labels.field, "extent": list(opts.extent or ()) or None,
              "split": split, "pixel_size_m": raster_pixel_m,
              "training_pixel_size_m": area.pixel_size_m}
    info = DataInfo(
        classes=labels.classes, ignore_index=IGNORE, bands=area.bands, scale=base.scale,
        gsd=area.pixel_size_m or base.gsd,
        name=f"{base.name} fine-tuned on {stem}"[:120],
        description="Fine-tuned in QGIS on " + stem + "; classes: " +
                    ", ".join(n for _, n, _ in labels.classes),
        provenance={"fine_tuned_from": {"file": Path(base_path).name, "name": base.name},
                    "trained_on": source, "classifier": classifier,
                    "input_scaling": area.scaling, "stretch_cuts": {str(b): list(v) for b, v in
                                                                   area.cuts.items()},
                    "steps": opts.steps})
    total = epochs * per_epoch

    def on_step(step: int, loss: float) -> None:
        report(0.05 + 0.9 * step / total, f"step {step}/{total}: loss {loss:.4f}")

    def on_epoch(row: dict[str, Any]) -> None:
        miou = row["val_miou"]
        report(0.05 + 0.9 * row["step"] / total,
               f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f}" +
               ("" if math.isnan(miou) else f", validation {miou:.4f}"))

    with tempfile.TemporaryDirectory(prefix="fctl_train_") as work:
        if keep:
            tc.init_from, pairing = base_path, None
        else:
            report(0.04, "matching the new classes with the base model's")
            tc.init_from, pairing = _mapped_init(base_path, base, config, train_img,
                                                 labels.classes, Path(work), opts, cancelled)
        info.provenance["classifier_initialised_from"] = pairing
        summary = train(config, [train_img], [val_img] if val_img is not None else [], info,
                        Path(work) / "run", tc, on_epoch=on_epoch, on_step=on_step,
                        should_stop=cancelled)
        if cancelled():
            raise Cancelled("training cancelled")
        report(0.97, "writing the model")
        model, card = load_checkpoint(summary["best"], "cpu")
        val = card.provenance.get("val")
        card.provenance = {**card.provenance, "seconds": round(time.perf_counter() - t0, 1)}
        written = []
        try:
            for src, dst in ((Path(work) / "run" / "log.csv", opts.log_csv),
                             (Path(work) / "run" / "log.png", opts.plot_png)):
                if dst and src.is_file():   # no plot without matplotlib
                    _copy(src, Path(dst))
                    written.append(dst)
            save_checkpoint(opts.output, model, card)
        except BaseException:
            for dst in written:
                Path(dst).unlink(missing_ok=True)
            raise
    miou = float(val["miou"]) if val else float("nan")
    return FineTuneResult(str(opts.output), miou, val, round(time.perf_counter() - t0, 1),
                          total, [(c.id, c.name, tuple(c.color)) for c in card.classes],
                          classifier, opts.log_csv, opts.plot_png)


def _mapped_init(base_path: str, base, config, train_img, classes, work: Path,
                 opts: FineTuneOptions, cancelled: CancelFn) -> tuple[str, dict]:
    """The base weights with the classifier mapped onto the new classes (``class_map``): the
    base model segments the training part as the engine runs it (native resolution, the
    fine-tuned model's)."""
    from ..checkpoint import load_checkpoint
    from .class_map import base_prediction, mapped_init_file

    model, card = load_checkpoint(base_path, "cpu")
    pred = base_prediction(model, card, train_img.image, work, device=opts.device,
                           batch_size=opts.batch_size, precision=opts.precision,
                           is_cancelled=cancelled)
    return mapped_init_file(base_path, card, config, pred, train_img.label, classes, IGNORE,
                            work)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)
