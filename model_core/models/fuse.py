"""Inference-time fusions: BatchNorm folded into the preceding convolution, the channel
groups of ALE's GroupDepthConv merged into one depthwise convolution, and on CPUs the activation
that follows a convolution computed inside it.

In eval mode y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is itself a convolution, so
the BatchNorm pass (a quarter of EfficientNet-Lite0's CPU time in NHWC) can be dropped. Labels
change only by float rounding. A ReLU or ReLU6 after a convolution is a separate pass over the
output in eager PyTorch; oneDNN applies it as the convolution writes (the fused kernel
PyTorch's own compiler uses), the same values, about 8 % of the bundled encoder's CPU time.
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


class ConvActivation(nn.Module):
    """A convolution and its ReLU / ReLU6 in one oneDNN call (CPU, float32); anywhere else the
    two ordinary calls. Keeps the convolution as ``conv`` (its parameters are the model's)."""

    def __init__(self, conv: nn.Conv2d, activation: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.activation = activation
        six = isinstance(activation, nn.ReLU6)
        self._attr, self._scalars = ("hardtanh", [0.0, 6.0]) if six else ("relu", [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        if x.device.type == "cpu" and x.dtype == c.weight.dtype == torch.float32:
            return torch.ops.mkldnn._convolution_pointwise(
                x, c.weight, c.bias, c.padding, c.stride, c.dilation, c.groups, self._attr,
                self._scalars, "")
        return self.activation(c(x))


def _pointwise_works() -> bool:
    """Whether this PyTorch has oneDNN's fused convolution (and it gives conv + ReLU6)."""
    if not (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        conv = nn.Conv2d(4, 8, 3, padding=1)
        x = torch.randn(1, 4, 6, 6, generator=g)
        with torch.no_grad():
            ref = torch.clamp(conv(x), 0, 6)
            got = ConvActivation(conv, nn.ReLU6())(x)
        return bool(torch.allclose(got, ref, atol=1e-5))
    except (RuntimeError, TypeError):
        return False


@torch.no_grad()
def fuse_activations(model: nn.Module) -> int:
    """Replace every Conv2d directly followed by a ReLU or ReLU6 (registration order, as after
    :func:`fold_batchnorm`) by a :class:`ConvActivation`, in place; returns how many. Nothing
    changes where PyTorch lacks oneDNN's fused convolution. For CPU inference."""
    if not _pointwise_works():
        return 0
    pairs = list(_conv_activation_pairs(model))
    for parent, (cname, conv), (aname, act) in pairs:
        setattr(parent, cname, ConvActivation(conv, act))
        setattr(parent, aname, nn.Identity())
    return len(pairs)


def _conv_activation_pairs(model: nn.Module):
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (cname, conv), (aname, act) in zip(children, children[1:]):
            if (type(conv) is nn.Conv2d and type(act) in (nn.ReLU, nn.ReLU6)
                    and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)):
                yield parent, (cname, conv), (aname, act)


def fusable(model: nn.Module, activations: bool = False) -> bool:
    """Whether :func:`fuse_for_inference` (and with ``activations``
    :func:`fuse_activations`) would change anything in ``model``."""
    if any(isinstance(m, (nn.BatchNorm2d, GroupDepthConv)) for m in model.modules()):
        return True
    return activations and next(_conv_activation_pairs(model), None) is not None


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
