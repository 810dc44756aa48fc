"""Focal loss (Sec. 3.5; Lin et al.): FL = -(1 - p_t)^gamma log p_t, with an ignore index."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FocalLoss(nn.Module):
    """Mean focal loss over the pixels whose label is not ``ignore_index`` (gamma 3 as the paper's
    code). ``weight`` optionally rescales classes as in cross-entropy."""

    def __init__(self, gamma: float = 3.0, ignore_index: int | None = None,
                 weight: Tensor | None = None) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.ignore_index = -100 if ignore_index is None else int(ignore_index)
        self.register_buffer("weight", weight if weight is None else weight.float())

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logp = F.log_softmax(logits.float(), dim=1)
        ce = F.nll_loss(logp, target.long(), ignore_index=self.ignore_index, reduction="none")
        pt = torch.exp(-ce)
        loss = (1 - pt).pow(self.gamma) * ce
        if self.weight is not None:
            safe = target.long().clamp(0, logits.shape[1] - 1)
            loss = loss * self.weight[safe]
        valid = target != self.ignore_index
        n = valid.sum()
        if n == 0:
            return logits.sum() * 0.0  # keeps the graph for backward on an all-ignored batch
        return loss[valid].sum() / n


class ViewConsistency(nn.Module):
    """KL(p_fine || p_coarse), the mean over labelled pixels: pulls the prediction on a coarser
    capture of a crop (what the engine feeds the network for imagery coarser than the model's
    pixel size) towards the prediction on the sharp crop, which is held fixed (no gradient).

    Not in the paper: it serves the engine's reading at the model's pixel size (the same ground
    at 1 m should get the labels it gets at 0.5 m)."""

    def __init__(self, ignore_index: int | None = None) -> None:
        super().__init__()
        self.ignore_index = -100 if ignore_index is None else int(ignore_index)

    def forward(self, coarse: Tensor, fine: Tensor, target: Tensor) -> Tensor:
        p_fine = F.softmax(fine.detach().float(), dim=1)
        kl = (p_fine * (torch.log(p_fine.clamp_min(1e-8))
                        - F.log_softmax(coarse.float(), dim=1))).sum(1)
        valid = target != self.ignore_index
        n = valid.sum()
        if n == 0:
            return coarse.sum() * 0.0
        return kl[valid].sum() / n
