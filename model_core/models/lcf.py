"""Locality-aware Context Fusion, LCF = LCC + MCF (Sec. 3.3, Eq. 5)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from .lcc import FULL_BOX, LCC, Box
from .mcf import MCF


class LCF(nn.Module):
    """X_bar_I = F_LCF(X_I, X_M, X_L) (Eq. 5): one LCC per context, merged by MCF.

    ``output`` says how the result joins X_I in X_I + X_bar_I + X_hat_I (Sec. 3.5):

    * ``"projection"``: a 1x1 conv initialised to zero. Training starts from the plain FCN, as
      the authors intended with their gate, but every one of its C x C weights takes a full
      Adam step, so LCF's share grows within a few hundred steps.
    * ``"none"``: the paper's plain sum.
    * ``"gamma"``: the conference code's scalar initialised to 0. Adam moves a scalar by about
      one learning rate per step, so after a CPU budget LCF stays near zero (0.7 % of X_I's
      norm in the first bundled model); kept only to load older checkpoints.
    """

    def __init__(self, channels: int, contexts: tuple[str, ...], *, key_channels: int | None = None,
                 heads: int = 1, positional: bool = True, fusion: str = "adaptive",
                 reduction: int = 4, output: str = "projection",
                 attention_scale: str = "sqrt") -> None:
        super().__init__()
        self.contexts = tuple(contexts)
        self.lcc = nn.ModuleDict({
            name: LCC(channels, key_channels, heads, positional, attention_scale)
            for name in self.contexts})
        self.mcf = MCF(channels, len(self.contexts), fusion, reduction)
        self.output = output
        if output == "projection":
            self.proj = nn.Conv2d(channels, channels, 1)
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)
        elif output == "gamma":
            self.gamma = nn.Parameter(torch.zeros(1))
        elif output != "none":
            raise ValueError(f"unknown LCF output {output!r}")

    def correlations(self, x_i: Tensor, ctx: Mapping[str, Tensor],
                     boxes: Mapping[str, Box | Tensor]) -> list[Tensor]:
        """The locality-aware features X_{I|U} for every configured context U."""
        out = []
        for name in self.contexts:
            x_u = x_i if name == "local" else ctx[name]
            box = FULL_BOX if name == "local" else boxes[name]
            out.append(self.lcc[name](x_i, x_u, box))
        return out

    def forward(self, x_i: Tensor, ctx: Mapping[str, Tensor],
                boxes: Mapping[str, Box | Tensor]) -> Tensor:
        fused = self.mcf(self.correlations(x_i, ctx, boxes))
        if self.output == "projection":
            return self.proj(fused)
        if self.output == "gamma":
            return self.gamma * fused
        return fused
