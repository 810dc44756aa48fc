"""The training loop of Sec. 4.2: Adam with poly decay (power 0.9), focal loss (gamma 3),
gradient accumulation to an effective batch (learning rate, weight decay and budget come from the
command line's ``--recipe``); CUDA with mixed precision when
available, resume, a CSV log and PNG plot per epoch, best checkpoint by validation mIoU.

Outputs in ``out_dir``: ``best.safetensors`` (best validation mIoU), ``last.safetensors`` +
``last_state.pt`` (optimizer and progress, for ``--resume``), ``log.csv`` and ``log.png``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..checkpoint import ClassInfo, ModelCard, save_checkpoint
from ..config import FCtLConfig
from ..inference.predict import resolve_device
from ..losses import FocalLoss
from ..models import FCtL
from ..registry import DEFAULT_ARCH, create_model
from .data import LabelledImage
from .metrics import Scores, confusion_matrix
from .pretrained import init_from_checkpoint, init_pretrained
from .sampling import RandomSampler
from .settings import DataInfo, TrainConfig

log = logging.getLogger(__name__)

LOG_FIELDS = ("epoch", "step", "lr", "train_loss", "val_miou", "val_pixel_accuracy", "seconds")


def poly_lr(step: int, total: int, power: float) -> float:
    """Poly decay factor (1 - step / total) ^ power."""
    return max(0.0, 1.0 - step / max(1, total)) ** power


def make_card(config: FCtLConfig, info: DataInfo, provenance: dict[str, Any]) -> ModelCard:
    return ModelCard(config=config,
                     classes=[ClassInfo(i, n, c) for i, n, c in info.classes],
                     ignore_index=info.ignore_index, bands=list(info.bands), scale=info.scale,
                     gsd=info.gsd, name=info.name, description=info.description,
                     provenance={**info.provenance, **provenance})


def validate(model: FCtL, card: ModelCard, images: list[LabelledImage], folder: Path,
             device: torch.device, batch_size: int = 4, shared_context: bool = True) -> Scores:
    """Scores on ``images``, each segmented whole by the streaming engine as users run it
    (written once to a GeoTIFF in ``folder``)."""
    from .evaluate import segment_file

    k = card.config.num_classes
    cm = np.zeros((k, k), np.int64)
    was_training = model.training
    model.eval()
    try:
        for im in images:
            path = folder / f"val_{im.id}.tif"
            if not path.is_file():
                write_array(path, im.image)
            pred = segment_file(str(path), model, card, False, str(device.type), batch_size,
                                workdir=folder, shared_context=shared_context)
            cm += confusion_matrix(im.label, pred, k, card.ignore_index)
    finally:
        model.train(was_training)
    return Scores(cm, card.ignore_index, {c.id: c.name for c in card.classes})


def write_array(path: Path, image: np.ndarray) -> None:
    """A (C, H, W) array as a plain GeoTIFF (no georeferencing)."""
    from osgeo import gdal
    from osgeo import gdal_array

    tmp = path.with_name(path.name + ".part")
    c, h, w = image.shape
    ds = gdal.GetDriverByName("GTiff").Create(
        str(tmp), w, h, c, gdal_array.NumericTypeCodeToGDALTypeCode(image.dtype),
        ["TILED=YES", "COMPRESS=DEFLATE"])
    for b in range(c):
        ds.GetRasterBand(b + 1).WriteArray(image[b])
    ds = None
    tmp.replace(path)


def train(config: FCtLConfig, train_images: list[LabelledImage],
          val_images: list[LabelledImage], info: DataInfo, out_dir: str | Path,
          tc: TrainConfig | None = None, resume: bool = False,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          on_step: Callable[[int, float], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Train ``config`` on ``train_images``, select on ``val_images``; returns the summary.

    ``on_step(step, loss)`` follows every mini-batch (1-based over all epochs); ``should_stop``
    is polled before each one: True raises :class:`~model_core.inference.options.Cancelled`.
    """
    from tqdm import tqdm

    tc = tc or TrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = resolve_device(tc.device)
    use_amp = tc.amp and device.type == "cuda"
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)

    model = create_model(DEFAULT_ARCH, config)
    n_pre = init_pretrained(model, tc.pretrained)
    init_report = init_from_checkpoint(model, tc.init_from) if tc.init_from else None
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    total_updates = math.ceil(tc.epochs * tc.steps_per_epoch / tc.accumulate)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: poly_lr(s, total_updates, tc.poly_power))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    crit = FocalLoss(tc.focal_gamma, info.ignore_index).to(device)

    start_epoch, best, history, seconds = 0, -math.inf, [], 0.0
    best_by_val = True   # False while the best so far is the lowest training loss (negated)
    state_file, csv_file = out / "last_state.pt", out / "log.csv"
    if resume:
        if not state_file.is_file():
            raise FileNotFoundError(f"nothing to resume in {out}: {state_file} is missing")
        from safetensors.torch import load_file
        model.load_state_dict(load_file(str(out / "last.safetensors")))
        st = torch.load(state_file, map_location=device, weights_only=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch, best, seconds = int(st["epoch"]), float(st["best"]), float(st["seconds"])
        best_by_val = best >= 0   # a mIoU; a training loss is kept negated
        history = _read_log(csv_file)
        log.info("resuming after epoch %d (best val mIoU %.4f)", start_epoch, best)
    elif csv_file.exists():
        csv_file.unlink()

    sampler = RandomSampler(train_images, config, info.scale, tc.augment,
                            seed=tc.seed + 1000 * start_epoch, coarser=tuple(tc.coarser),
                            coarser_prob=tc.coarser_prob)
    val_dir = out / "val_images"
    val_dir.mkdir(exist_ok=True)
    base_prov = {
        "train_ids": [im.id for im in train_images], "val_ids": [im.id for im in val_images],
        "train": {**asdict(tc), "effective_batch": tc.batch_size * tc.accumulate,
                  "pretrained_tensors": n_pre, "initialised_from": init_report},
    }
    if tc.validate_start and val_images and start_epoch == 0:
        # The starting weights compete too: a fine-tuning whose epochs all score lower on
        # validation than where it started returns the start, never something worse.
        t0 = time.time()
        scores = validate(model, make_card(config, info, {}), val_images, val_dir, device,
                          tc.val_batch_size, tc.val_shared_context)
        seconds += time.time() - t0
        history.append({"epoch": 0, "step": 0, "lr": opt.param_groups[0]["lr"],
                        "train_loss": float("nan"), "val_miou": scores.headline,
                        "val_pixel_accuracy": scores.pixel_accuracy, "seconds": round(seconds, 1)})
        _write_log(csv_file, history)
        log.info("before training: val mIoU %.4f", scores.headline)
        if not math.isnan(scores.headline):
            best = scores.headline
            save_checkpoint(out / "best.safetensors", model, make_card(config, info, {
                **base_prov, "epochs": 0, "training_seconds": round(seconds, 1),
                "val": scores.to_dict(), "selected": "starting weights (best val mIoU)"}))
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.time()
        model.train()
        losses = []
        bar = tqdm(range(tc.steps_per_epoch), desc=f"epoch {epoch + 1}/{tc.epochs}",
                   mininterval=5.0, leave=False)
        for step in bar:
            if should_stop is not None and should_stop():
                from ..inference.options import Cancelled
                raise Cancelled("training cancelled")
            s = sampler.batch(tc.batch_size).to(device)
            with torch.autocast(device.type, enabled=use_amp):
                logits = model(s.local, s.contexts.get("medium"), s.contexts.get("large"),
                               boxes=s.boxes)
                loss = crit(logits, s.label)
            scaler.scale(loss / tc.accumulate).backward()
            if (step + 1) % tc.accumulate == 0 or step + 1 == tc.steps_per_epoch:
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(epoch * tc.steps_per_epoch + step + 1, losses[-1])
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        bar.close()
        scores = validate(model, make_card(config, info, {}), val_images, val_dir, device,
                          tc.val_batch_size, tc.val_shared_context) if val_images else None
        seconds += time.time() - t0
        row = {"epoch": epoch + 1, "step": (epoch + 1) * tc.steps_per_epoch,
               "lr": opt.param_groups[0]["lr"], "train_loss": float(np.mean(losses)),
               "val_miou": scores.headline if scores else float("nan"),
               "val_pixel_accuracy": scores.pixel_accuracy if scores else float("nan"),
               "seconds": round(seconds, 1)}
        history.append(row)
        _write_log(csv_file, history)
        plot_log(history, out / "log.png")
        prov = {**base_prov, "epochs": epoch + 1, "training_seconds": round(seconds, 1),
                "val": scores.to_dict() if scores else None}
        card = make_card(config, info, prov)
        save_checkpoint(out / "last.safetensors", model, card)
        # without validation (or with an undefined score) the lowest training loss is kept
        by_val = scores is not None and not math.isnan(row["val_miou"])
        score = row["val_miou"] if by_val else -row["train_loss"]
        if score > best:
            best, best_by_val = score, by_val
            selected = "best val mIoU" if by_val else "lowest training loss (no validation score)"
            save_checkpoint(out / "best.safetensors", model,
                            make_card(config, info, {**prov, "selected": selected}))
        _save_state(state_file, opt, sched, epoch + 1, best, seconds)
        log.info("epoch %d: loss %.4f, val mIoU %.4f, %.0f s", epoch + 1, row["train_loss"],
                 row["val_miou"], seconds)
        if on_epoch:
            on_epoch(row)
    # without validation images the best epoch is the one of lowest training loss: say so,
    # rather than a negative "mIoU"
    summary = {"best_val_miou": best if best_by_val else None,
               **({} if best_by_val else {"best_train_loss": -best}),
               "epochs": tc.epochs, "seconds": round(seconds, 1),
               "best": str(out / "best.safetensors"), "log": str(csv_file)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _save_state(path: Path, opt, sched, epoch: int, best: float, seconds: float) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                "best": best, "seconds": seconds}, tmp)
    tmp.replace(path)


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if k not in ("epoch", "step") else int(v) for k, v in r.items()}
                for r in csv.DictReader(f)]


def plot_log(rows: list[dict[str, Any]], path: Path) -> None:
    """PNG of training loss and validation mIoU per epoch (skipped without matplotlib)."""
    try:
        import matplotlib
    except ImportError:   # e.g. a QGIS Python without it: the CSV log is enough to train
        log.warning("matplotlib is not installed: no plot of the training log")
        return
    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # a system matplotlib beside the venv's shadows mpl_toolkits: 3D axes, never used here
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [r["train_loss"] for r in rows], "o-", color="tab:red", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("focal loss", color="tab:red")
    ax2 = ax.twinx()
    ax2.plot(ep, [r["val_miou"] for r in rows], "s-", color="tab:blue", label="val mIoU")
    ax2.set_ylabel("validation mIoU", color="tab:blue")
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".part.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
