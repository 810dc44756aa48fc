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
