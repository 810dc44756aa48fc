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


def test_command_line_fine_tuning_starts_from_the_closest_base_classes(tmp_path):
    """``train --init-from BASE`` with other classes than BASE's pairs them as fctl:train does:
    labels drawn where the base model predicts two of its classes pair with exactly those
    (IoU 1), the card says so, and a BASE of the same classes or of another network is loaded
    as before."""
    from plugin_fixtures import make_tiny_model
    from test_training import scene

    from conftest import write_geotiff
    from model_core import cli
    from model_core.checkpoint import load_checkpoint, read_card
    from model_core.training.class_map import mapped_init_for_images
    from model_core.training.data import LabelledImage
    from model_core.training.evaluate import segment_file

    base_path = make_tiny_model(tmp_path / "base.safetensors")
    model, card = load_checkpoint(base_path, "cpu")
    img, _ = scene(160)
    image = write_geotiff(tmp_path / "img.tif", img)
    pred = segment_file(str(image), model, card, False, "cpu")
    counts = np.bincount(pred.ravel(), minlength=7)
    counts[card.ignore_index] = 0
    x, y = np.argsort(counts)[::-1][:2]
    label = np.full(pred.shape, 255, np.uint8)
    label[pred == x], label[pred == y] = 0, 1
    classes = [(0, "ground", (0, 0, 0)), (1, "roof", (255, 0, 0))]
    config = dataclasses.replace(card.config, num_classes=2)
    names = {c.id: c.name for c in card.classes}

    init, pairs = mapped_init_for_images(str(base_path), config, classes, 255,
                                         [LabelledImage("img", img, label)], tmp_path, "cpu")
    assert pairs == {"ground": {"from": names[x], "iou": 1.0},
                     "roof": {"from": names[y], "iou": 1.0}}
    same = [(c.id, c.name, c.color) for c in card.classes]
    assert mapped_init_for_images(str(base_path), card.config, same, 255, [], tmp_path) is None
    wider = dataclasses.replace(config, decoder_channels=16)
    assert mapped_init_for_images(str(base_path), wider, classes, 255, [], tmp_path) is None

    write_geotiff(tmp_path / "lab.tif", label)
    c = card.config
    code = cli.main(["train", "--layout", "raster", "--image", str(image), "--labels",
                     str(tmp_path / "lab.tif"), "--ignore-index", "255",
                     "--classes", "0:ground:#000000,1:roof:#ff0000",
                     "--init-from", str(base_path), "--pretrained", "none", "--backbone", c.backbone,
                     "--patch-size", str(c.patch_size), "--decoder-channels",
                     str(c.decoder_channels), "--large-context", "global", "--epochs", "1",
                     "--steps-per-epoch", "1", "--batch-size", "2", "--device", "cpu",
                     "--threads", "1", "--out", str(tmp_path / "run")])
    assert code == 0
    prov = read_card(tmp_path / "run" / "best.safetensors").provenance
    assert prov["classifier_initialised_from"]["classes"] == pairs
