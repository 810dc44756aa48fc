"""Training for imagery coarser than the model's pixel size: pairs of the same crop, sharp and
from a coarser view, and the consistency term between their predictions (``--consistency``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_core.losses import ViewConsistency
from model_core.training.data import LabelledImage
from model_core.training.sampling import RandomSampler
from test_training import _pair, scene, tiny


def test_view_consistency_is_the_kl_from_the_fixed_sharp_prediction():
    g = torch.Generator().manual_seed(0)
    fine = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    coarse = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    crit = ViewConsistency(ignore_index=0)
    assert float(crit(fine.detach().clone(), fine, target)) == pytest.approx(0.0, abs=1e-6)
    loss = crit(coarse, fine, target)
    loss.backward()
    p, logq = fine.detach().softmax(1), coarse.detach().log_softmax(1)
    kl = (p * (p.log() - logq)).sum(1)
    assert float(loss) == pytest.approx(float(kl[target != 0].mean()), rel=1e-5)
    assert fine.grad is None, "the sharp prediction is the target: no gradient into it"
    assert coarse.grad[:, :, target[0] != 0].abs().sum() > 0
    # ignored pixels carry no gradient
    assert float(coarse.grad.permute(0, 2, 3, 1)[target == 0].abs().sum()) == 0.0


def test_view_pairs_are_the_same_crops_of_the_sharp_and_a_coarser_image():
    img, label = scene(160, seed=4)
    sampler = RandomSampler([LabelledImage("a", img, label)], tiny(patch_size=32, num_classes=4),
                            augment=False, seed=3, coarser=(2.0, 3.0))
    s = sampler.view_pairs(3)
    assert s.local.shape == (6, 3, 32, 32)
    assert torch.equal(s.label[:3], s.label[3:])
    for name in s.boxes:
        assert torch.equal(s.boxes[name][:3], s.boxes[name][3:])
    views = sampler.views[0]
    windows = np.lib.stride_tricks.sliding_window_view(img, (3, 32, 32))[0]
    for j in range(3):
        raw = (s.local[j].numpy() * 255).round().astype(np.uint8)
        ys, xs = np.nonzero((windows == raw).all(axis=(2, 3, 4)))
        y, x = ys[0], xs[0]
        assert np.array_equal(s.label[j].numpy(), label[y:y + 32, x:x + 32])
        coarse = (s.local[3 + j].numpy() * 255).round().astype(np.uint8)
        assert any(np.array_equal(coarse, v[:, y:y + 32, x:x + 32]) for v in views[1:])
        assert not np.array_equal(coarse, raw)
    with pytest.raises(ValueError, match="coarser-views"):
        RandomSampler([LabelledImage("a", img, label)], tiny(patch_size=32)).view_pairs(2)


def test_the_training_loss_carries_the_weighted_consistency_term(tmp_path):
    """lr 0: both runs see the same pairs through the same network, so their logged losses
    differ by (w1 - w0) x the mean KL, which is positive (coarse crops are not labelled exactly
    as sharp ones); without the term in the loss they would be equal."""
    import csv

    from model_core.training.loop import DataInfo, TrainConfig, train

    tr = _pair(tmp_path, 0)
    info = DataInfo([(0, "nothing", (0, 0, 0)), (1, "water", (0, 0, 255)),
                     (2, "forest", (0, 255, 0)), (3, "fields", (255, 255, 0))], ignore_index=0)
    loss = {}
    for weight in (1e-9, 100.0):
        tc = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2, accumulate=1, lr=0.0,
                         pretrained=None, threads=1, coarser=(2.0, 3.0), consistency=weight)
        train(tiny(num_classes=4), [tr], [], info, tmp_path / str(weight), tc)
        rows = list(csv.DictReader(open(tmp_path / str(weight) / "log.csv")))
        loss[weight] = float(rows[0]["train_loss"])
    kl = (loss[100.0] - loss[1e-9]) / 100.0
    assert 1e-6 < kl < 5.0, loss
    with pytest.raises(ValueError, match="coarser-views"):
        train(tiny(num_classes=4), [tr], [], info, tmp_path / "bad",
              TrainConfig(epochs=1, steps_per_epoch=1, pretrained=None, consistency=1.0))
