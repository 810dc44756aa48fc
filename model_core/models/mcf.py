"""Multi-Context Fusion, MCF (Sec. 3.3.2, Eq. 3-4), and the trivial fusions of Table 6."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MCF(nn.Module):
    """Merge T locality-aware features with weights H_U that sum to 1 at every element.

    ``adaptive`` (Eq. 3): concat -> 1x1 squeeze -> ReLU -> 1x1 back to T*C -> softmax across the
    T contexts, then Eq. 4: X_I = sum_U H_U * X_{I|U}. ``weighted`` learns one softmaxed weight per
    context (constant for a dataset); ``average`` is 1/T.
    """

    def __init__(self, channels: int, n_contexts: int, fusion: str = "adaptive",
                 reduction: int = 4) -> None:
        super().__init__()
        self.n = n_contexts
        self.fusion = fusion
        if fusion == "adaptive" and n_contexts > 1:
            total = channels * n_contexts
            squeezed = max(total // reduction, 8)
            self.estimate = nn.Sequential(
                nn.Conv2d(total, squeezed, 1), nn.ReLU(inplace=True), nn.Conv2d(squeezed, total, 1))
        elif fusion == "weighted" and n_contexts > 1:
            self.logits = nn.Parameter(torch.zeros(n_contexts))

    def weights(self, feats: list[Tensor]) -> Tensor:
        """H of Eq. 3 with shape (B, T, C, H, W) (broadcastable for the trivial fusions)."""
        ref = feats[0]
        if self.n == 1 or self.fusion == "average":
            return ref.new_full((1, self.n, 1, 1, 1), 1.0 / self.n)
        if self.fusion == "weighted":
            return self.logits.softmax(0).to(ref.dtype).view(1, self.n, 1, 1, 1)
        b, c, h, w = ref.shape
        logits = self.estimate(torch.cat(feats, dim=1)).view(b, self.n, c, h, w)
        return logits.softmax(dim=1)

    def forward(self, feats: list[Tensor]) -> Tensor:
        if len(feats) != self.n:
            raise ValueError(f"MCF expects {self.n} feature maps, got {len(feats)}")
        h = self.weights(feats)
        return (h * torch.stack(feats, dim=1)).sum(dim=1)
