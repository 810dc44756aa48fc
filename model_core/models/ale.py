"""Alternating Local Enhancement, ALE (Sec. 3.4, Alg. 1, Fig. 13) with LFI blocks (Eq. 6-7)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ALE_ORDER
from .lcc import Box


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class GroupDepthConv(nn.Module):
    """Eq. 6: channel groups, each convolved depthwise with its own window size omega_i.

    :meth:`fuse` (inference) replaces the per-group convolutions by one depthwise convolution
    whose kernels are each group's kernel zero-padded to the largest window: the same sums in a
    single call, about half the time of four small calls on a CPU.
    """

    def __init__(self, channels: int, kernels: Sequence[int]) -> None:
        super().__init__()
        kernels = [k for k in kernels][:channels]
        self.groups = _split(channels, len(kernels))
        self.convs = nn.ModuleList(
            nn.Conv2d(g, g, k, padding=k // 2, groups=g) for g, k in zip(self.groups, kernels))
        # Set by fuse(); non-persistent, so checkpoints keep the per-group parameters.
        self.register_buffer("fused_weight", None, persistent=False)
        self.register_buffer("fused_bias", None, persistent=False)

    @torch.no_grad()
    def fuse(self) -> None:
        """Build the single-call kernel from the current weights (eval mode only)."""
        if self.training:
            raise ValueError("GroupDepthConv.fuse is for inference: call eval() first")
        size = max(c.kernel_size[0] for c in self.convs)
        weights = []
        for conv in self.convs:
            pad = (size - conv.kernel_size[0]) // 2
            weights.append(F.pad(conv.weight, (pad, pad, pad, pad)))
        self.fused_weight = torch.cat(weights)
        self.fused_bias = torch.cat([c.bias for c in self.convs])

    def forward(self, x: Tensor) -> Tensor:
        if self.fused_weight is not None and not self.training:
            w = self.fused_weight.to(x.dtype)
            return F.conv2d(x, w, self.fused_bias.to(x.dtype), padding=w.shape[-1] // 2,
                            groups=w.shape[0])
        return torch.cat([conv(part) for conv, part in zip(self.convs, x.split(self.groups, 1))], 1)


class LFI(nn.Module):
    """Local Feature Interaction f(X_tar; {X_ref}) (Sec. 3.4.2).

    Target and references are tokenised by 1x1 convs (the references to C / n_refs channels each,
    so that their concatenation X_ref has C channels), E = GroupDepthConv(X_ref) (Eq. 6, a spatial
    attention map confined to small windows), and X_bar_tar = X_tar + E * X_tar (Eq. 7).

    ``activation="sigmoid"`` bounds E to (0, 1), so that Eq. 7 can at most double a feature and
    never flips its sign; ``"none"`` is the paper's unbounded E.
    """

    def __init__(self, channels: int, n_refs: int, kernels: Sequence[int] = (3, 5, 7, 9),
                 activation: str = "sigmoid") -> None:
        super().__init__()
        if activation not in ("sigmoid", "none"):
            raise ValueError(f"unknown LFI activation {activation!r}")
        self.activation = activation
        self.tokenize_target = nn.Conv2d(channels, channels, 1)
        self.tokenize_refs = nn.ModuleList(nn.Conv2d(channels, c, 1) for c in _split(channels, n_refs))
        self.attention = GroupDepthConv(channels, kernels)

    def forward(self, target: Tensor, refs: Sequence[Tensor]) -> Tensor:
        if len(refs) != len(self.tokenize_refs):
            raise ValueError(f"LFI expects {len(self.tokenize_refs)} references, got {len(refs)}")
        t = self.tokenize_target(target)
        x_ref = torch.cat([tok(r) for tok, r in zip(self.tokenize_refs, refs)], dim=1)
        e = self.attention(x_ref)
        if self.activation == "sigmoid":
            e = torch.sigmoid(e)
        return t + e * t


class ALE(nn.Module):
    """Alg. 1 generalised to the structures of Fig. 13.

    Each round enhances every stream (local and the references) with the others as references,
    all from the previous round's features (L1-L3 of Alg. 1); a final LFI enhances the local
    features with the enhanced references (L4). Variants: (a)/(c) no round, (b)/(d) one round
    (second order; (d) is Alg. 1), (e) two rounds; (a)/(b) take one reference, (c)-(e) both.
    """

    def __init__(self, channels: int, refs: tuple[str, ...], structure: str = "d",
                 kernels: Sequence[int] = (3, 5, 7, 9), activation: str = "sigmoid") -> None:
        super().__init__()
        self.refs = tuple(refs)
        self.streams = ("local",) + self.refs
        n_others = len(self.streams) - 1
        self.rounds = nn.ModuleList(
            nn.ModuleDict({s: LFI(channels, n_others, kernels, activation) for s in self.streams})
            for _ in range(ALE_ORDER[structure]))
        self.final = LFI(channels, len(self.refs), kernels, activation)

    def forward(self, x_i: Tensor, crops: Mapping[str, Tensor]) -> Tensor:
        cur = {"local": x_i, **{r: crops[r] for r in self.refs}}
        for blocks in self.rounds:
            cur = {s: blocks[s](cur[s], [cur[o] for o in self.streams if o != s])
                   for s in self.streams}
        return self.final(cur["local"], [cur[r] for r in self.refs])


class ConcatFusion(nn.Module):
    """The "Concat" row of Table 7: local and cropped context features concatenated, 1x1 conv."""

    def __init__(self, channels: int, refs: tuple[str, ...]) -> None:
        super().__init__()
        self.refs = tuple(refs)
        self.proj = nn.Sequential(nn.Conv2d(channels * (1 + len(refs)), channels, 1),
                                  nn.ReLU(inplace=True))

    def forward(self, x_i: Tensor, crops: Mapping[str, Tensor]) -> Tensor:
        return self.proj(torch.cat([x_i] + [crops[r] for r in self.refs], dim=1))


def crop_to_patch(feat: Tensor, box: Box | Tensor, size: tuple[int, int]) -> Tensor:
    """X_tilde_U of Sec. 3.4.1: the region of a context's features that the local patch covers,
    bilinearly resized to the local feature size. ``box`` as in :func:`lcc.relative_positions`.
    """
    b = feat.shape[0]
    box_t = torch.as_tensor(box, dtype=feat.dtype, device=feat.device).view(-1, 4)
    x0, y0, x1, y1 = box_t.unbind(-1)
    theta = torch.zeros(box_t.shape[0], 2, 3, dtype=feat.dtype, device=feat.device)
    theta[:, 0, 0] = x1 - x0
    theta[:, 0, 2] = x0 + x1 - 1
    theta[:, 1, 1] = y1 - y0
    theta[:, 1, 2] = y0 + y1 - 1
    n = max(b, theta.shape[0])
    if feat.shape[0] != n:
        feat = feat.expand(n, -1, -1, -1)
    if theta.shape[0] != n:
        theta = theta.expand(n, -1, -1)
    grid = F.affine_grid(theta, [n, feat.shape[1], size[0], size[1]], align_corners=False)
    return F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=False)
