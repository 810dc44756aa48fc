"""Locality-aware Context Fusion, LCF = LCC + MCF (Sec. 3.3, Eq. 5)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from .lcc import FULL_BOX, LCC, Box
from .mcf import MCF


class LCF(nn.Module):
    """X_bar_I = F_LCF(X_I, X_M, X_L) (Eq. 5): one LCC per context, merged by MCF.

    The output is scaled by a learnable ``gamma`` initialised to 0, as in the authors' LCC code,
    so that training starts from the plain FCN and the correlations are blended in gradually.
    """

    def __init__(self, channels: int, contexts: tuple[str, ...], *, key_channels: int | None = None,
                 heads: int = 1, positional: bool = True, fusion: str = "adaptive",
                 reduction: int = 4) -> None:
        super().__init__()
        self.contexts = tuple(contexts)
        self.lcc = nn.ModuleDict({
            name: LCC(channels, key_channels, heads, positional) for name in self.contexts})
        self.mcf = MCF(channels, len(self.contexts), fusion, reduction)
        self.gamma = nn.Parameter(torch.zeros(1))

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
        return self.gamma * self.mcf(self.correlations(x_i, ctx, boxes))
