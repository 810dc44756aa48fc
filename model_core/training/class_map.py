"""The new classifier of a fine-tuned model starts from the base model's closest classes.

Fine-tuning with classes the base model does not have used to start from a random classifier,
so the first hundred steps went into relearning what the base model already knew (a
"building" class on top of a land-cover model scored below the base model's own "urban"
class after 60 steps). Instead, each new class starts as the base class that matches it best
on the training area: the base model segments the training image as the engine runs it, and
new class c is paired with base class b by the IoU of {label = c} and {prediction = b},
greedily from the highest IoU, one base class per new class (the base model's ignored class
is never a candidate). The paired rows of every class-dependent tensor (the decoder's score
convolutions and, in both of their class dimensions, its learned upsamplings) are copied
from the base model; an unpaired class keeps the fresh initialisation. Before the first
step the new model therefore predicts each new class where the base model predicts its
partner class.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)


def match_classes(pred: np.ndarray, label: np.ndarray, new_ids: list[int], base_ids: list[int],
                  ignore: int) -> dict[int, tuple[int, float]]:
    """{new class id: (base class id, IoU)} paired greedily by decreasing IoU, one to one."""
    keep = label != ignore
    p, t = pred[keep].astype(np.int64), label[keep].astype(np.int64)
    size = max(max(new_ids, default=0), int(t.max(initial=0))) + 1
    bsize = max(max(base_ids, default=0), int(p.max(initial=0))) + 1
    joint = np.bincount(t * bsize + p, minlength=size * bsize).reshape(size, bsize)
    per_label, per_pred = joint.sum(1), joint.sum(0)
    scored = []
    for c in new_ids:
        for b in base_ids:
            inter = int(joint[c, b])
            if inter:
                scored.append((inter / (per_label[c] + per_pred[b] - inter), c, b))
    pairs: dict[int, tuple[int, float]] = {}
    for iou, c, b in sorted(scored, reverse=True):
        if c not in pairs and all(b != pb for pb, _ in pairs.values()):
            pairs[c] = (b, round(float(iou), 4))
    return pairs


def class_dims(config) -> dict[str, tuple[int, ...]]:
    """For each tensor whose shape depends on the number of classes, the dimensions that do."""
    from ..registry import DEFAULT_ARCH, create_model

    a = create_model(DEFAULT_ARCH, config).state_dict()
    b = create_model(DEFAULT_ARCH, dataclasses.replace(
        config, num_classes=config.num_classes + 1)).state_dict()
    return {k: tuple(d for d in range(a[k].ndim) if a[k].shape[d] != b[k].shape[d])
            for k in a if a[k].shape != b[k].shape}


def mapped_tensors(base: dict[str, Tensor], fresh: dict[str, Tensor],
                   dims: dict[str, tuple[int, ...]], pairs: dict[int, int]
                   ) -> dict[str, Tensor]:
    """The class-dependent tensors of the new model: ``fresh`` with the paired base entries."""
    out = {}
    for name, d in dims.items():
        t = fresh[name].clone()
        src = base[name]
        if len(d) == 1:
            for c, b in pairs.items():
                t.select(d[0], c).copy_(src.select(d[0], b))
        elif len(d) == 2:
            for c1, b1 in pairs.items():
                for c2, b2 in pairs.items():
                    t.select(d[0], c1).select(d[1] - 1, c2).copy_(
                        src.select(d[0], b1).select(d[1] - 1, b2))
        else:
            raise ValueError(f"{name}: {len(d)} class dimensions, expected 1 or 2")
        out[name] = t
    return out


def mapped_init_file(base_path: str, base_card, new_config, pred: np.ndarray, label: np.ndarray,
                     new_classes: list[tuple[int, str, tuple]], ignore: int, folder: Path
                     ) -> tuple[str, dict]:
    """A safetensors file: the base weights with the classifier mapped onto the new classes;
    and the pairing for the card (new class name -> base class name and IoU)."""
    from safetensors.torch import load_file, save_file

    from ..registry import DEFAULT_ARCH, create_model

    base_ids = [c.id for c in base_card.classes if c.id != base_card.ignore_index]
    new_ids = [c for c, _, _ in new_classes]
    found = match_classes(pred, label, new_ids, base_ids, ignore)
    base_state = load_file(base_path)
    dims = class_dims(base_card.config)
    torch.manual_seed(0)
    fresh = create_model(DEFAULT_ARCH, new_config).state_dict()
    state = {k: v for k, v in base_state.items() if k not in dims}
    state.update(mapped_tensors(base_state, fresh, dims, {c: b for c, (b, _) in found.items()}))
    path = folder / "init.safetensors"
    save_file(state, str(path))
    names = {c.id: c.name for c in base_card.classes}
    report = {n: {"from": names[found[c][0]], "iou": found[c][1]} if c in found else None
              for c, n, _ in new_classes}
    log.info("classifier initialised from the base classes: %s", report)
    return str(path), report


def mapped_init_for_images(base_path: str, config, classes: list[tuple[int, str, tuple]],
                           ignore: int | None, images: list, folder: Path,
                           device: str = "auto", max_pixels: int = 25_000_000
                           ) -> tuple[str, dict] | None:
    """``train --init-from BASE`` with other classes than BASE's: as ``fctl:train`` does, the
    base model segments the training images (the first ones, up to ``max_pixels``) and each new
    class starts from its closest base class. Returns (init file in ``folder``, the pairing for
    the card), or None where BASE's classifier fits as it is (the same class ids and names) or
    the networks differ beyond the class count (its classifier then starts fresh, as before)."""
    from ..checkpoint import load_checkpoint, read_card

    base = read_card(base_path)
    if ([(c.id, c.name) for c in base.classes] == [(c, n) for c, n, _ in classes]
            and base.config.num_classes == config.num_classes):
        return None
    # the input normalisation holds no tensor: only the layers must match
    if dataclasses.replace(base.config, num_classes=config.num_classes,
                           input_mean=config.input_mean, input_std=config.input_std) != config:
        log.info("%s is another network than the one trained (beyond its classes): its "
                 "classifier is not carried over", base_path)
        return None
    model, card = load_checkpoint(base_path, "cpu")
    preds, labels, used = [], [], 0
    for im in images:
        if used and used + im.label.size > max_pixels:
            break
        preds.append(base_prediction(model, card, im.image, folder, device=device).ravel())
        labels.append(im.label.ravel())
        used += im.label.size
    # no ignore index: -1 matches no label
    return mapped_init_file(base_path, card, config, np.concatenate(preds),
                            np.concatenate(labels), classes, -1 if ignore is None else ignore,
                            folder)


def base_prediction(model, card, image: np.ndarray, folder: Path, **segment_kw) -> np.ndarray:
    """The base model's classes of an in-memory training image (C, H, W), segmented as the
    engine runs it (native resolution) through a temporary file in ``folder``."""
    from .evaluate import segment_file
    from .loop import write_array

    path = folder / "base_on_training_image.tif"
    write_array(path, image)
    try:
        return segment_file(str(path), model, card, False, workdir=folder, **segment_kw)
    finally:
        path.unlink(missing_ok=True)
