"""Inference-time fusions: BatchNorm folded into the preceding convolution, and the channel
groups of ALE's GroupDepthConv merged into one depthwise convolution.

In eval mode y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is itself a convolution, so
the BatchNorm pass (a quarter of EfficientNet-Lite0's CPU time in NHWC) can be dropped. Labels
change only by float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

from .ale import GroupDepthConv


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.data.mul_(scale.view(-1, *([1] * (conv.weight.dim() - 1))))
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale + bn.bias.detach()
    conv.bias = nn.Parameter(new_bias, requires_grad=False)


def _after_bn(bn: nn.BatchNorm2d) -> nn.Module:
    # timm's BatchNormAct2d applies drop and act after the normalisation: keep those.
    rest = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None))
            if m is not None and not isinstance(m, nn.Identity)]
    if not rest:
        return nn.Identity()
    return rest[0] if len(rest) == 1 else nn.Sequential(*rest)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d (registration order, matching
    channels) into that conv, in place; returns how many were folded. Idempotent. Eval only."""
    if model.training:
        raise ValueError("fold_batchnorm is for inference: call model.eval() first")
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, conv), (name, bn) in zip(children, children[1:]):
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                    and bn.track_running_stats and bn.running_mean is not None
                    and bn.num_features == conv.out_channels and bn.affine):
                _folded(conv, bn)
                setattr(parent, name, _after_bn(bn))
                folded += 1
    return folded


def fusable(model: nn.Module) -> bool:
    """Whether :func:`fuse_for_inference` would change anything in ``model``."""
    return any(isinstance(m, (nn.BatchNorm2d, GroupDepthConv)) for m in model.modules())


@torch.no_grad()
def fuse_for_inference(model: nn.Module) -> int:
    """Every inference fusion, in place (eval only): :func:`fold_batchnorm` and
    :meth:`GroupDepthConv.fuse`; returns how many modules were fused."""
    n = fold_batchnorm(model)
    for m in model.modules():
        if isinstance(m, GroupDepthConv):
            m.fuse()
            n += 1
    return n
