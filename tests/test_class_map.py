"""Fine-tuning with new classes starts from the base model's closest classes
(model_core.training.class_map): the pairing by IoU, the class-dependent tensors, and a mapped
model that predicts, before any step, each new class exactly where the base model predicts its
partner."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from model_core.config import FCtLConfig
from model_core.registry import DEFAULT_ARCH, create_model
from model_core.training.class_map import class_dims, mapped_tensors, match_classes

TINY = FCtLConfig(backbone="mobilenetv3_small_050", num_classes=7, patch_size=128,
                  decoder_channels=32)


def test_pairs_are_one_to_one_by_decreasing_iou_and_skip_ignored_pixels():
    label = np.array([[0, 0, 1, 1, 9, 9]] * 4, np.uint8)
    pred = np.array([[3, 3, 3, 5, 3, 3]] * 4, np.uint8)
    # on the labelled pixels class 0 overlaps 3 (IoU 2/3), class 1 overlaps 3 (1/4) and 5
    # (1/2): 0 takes 3, so 1 gets 5; the ignored 9s (predicted 3) do not count.
    pairs = match_classes(pred, label, [0, 1], [1, 2, 3, 4, 5, 6], ignore=9)
    assert pairs == {0: (3, 0.6667), 1: (5, 0.5)}
    # both new classes inside one base class: the weaker one stays unpaired
    pairs = match_classes(np.full_like(pred, 3), label, [0, 1], [1, 2, 3, 4, 5, 6], ignore=9)
    assert list(pairs) == [0] or list(pairs) == [1]
    # the base model's ignored class is never a candidate
    assert match_classes(np.zeros_like(pred), label, [0, 1], [1, 2], ignore=9) == {}


def test_class_dependent_tensors_and_their_dimensions():
    dims = class_dims(TINY)
    assert dims == {**{f"decoder.{n}.{p}": (0,) for n in ("score32", "score16", "score8")
                       for p in ("weight", "bias")},
                    **{f"decoder.up{s}.weight": (0, 1) for s in (32, 16, 8)}}


def test_mapped_model_predicts_the_partner_classes_before_training():
    torch.manual_seed(3)
    base = create_model(DEFAULT_ARCH, TINY).eval()
    with torch.no_grad():   # skips start at zero in a fresh model: give them weight
        for n in ("score16", "score8"):
            getattr(base.decoder, n).weight.normal_(0, 0.05)
            getattr(base.decoder, n).bias.normal_(0, 0.05)
    new_cfg = dataclasses.replace(TINY, num_classes=3)
    new = create_model(DEFAULT_ARCH, new_cfg).eval()
    dims = class_dims(TINY)
    pairs = {0: 4, 1: 2}            # class 2 unpaired: keeps its fresh weights
    state = {k: v for k, v in base.state_dict().items() if k not in dims}
    mapped = mapped_tensors(base.state_dict(), new.state_dict(), dims, pairs)
    state.update(mapped)
    fresh_row = new.state_dict()["decoder.score32.weight"][2].clone()
    new.load_state_dict(state)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        box = {"large": (0.25, 0.25, 0.75, 0.75)}
        b, n = base(x, x, x, boxes=box), new(x, x, x, boxes=box)
    # the upsamplings start bilinear (diagonal), so the paired logits are the base's exactly
    torch.testing.assert_close(n[:, 0], b[:, 4])
    torch.testing.assert_close(n[:, 1], b[:, 2])
    assert torch.equal(new.state_dict()["decoder.score32.weight"][2], fresh_row)
    up = mapped["decoder.up8.weight"]
    assert torch.equal(up[0, 1], base.state_dict()["decoder.up8.weight"][4, 2])
