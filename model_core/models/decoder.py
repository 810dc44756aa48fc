"""FCN-8s-style decoder (Sec. 3.5): three learned upsamplings with skips at strides 16 and 8."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bilinear_kernel(channels: int, k: int) -> Tensor:
    """Weights that make a ConvTranspose2d start as bilinear upsampling (as in FCN)."""
    factor = (k + 1) // 2
    centre = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt = 1 - (og - centre).abs() / factor
    w = torch.zeros(channels, channels, k, k)
    w[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return w


def _upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2,
                            bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


def _match(x: Tensor, size: tuple[int, int]) -> Tensor:
    # Backbones round feature sizes differently (VGG down, PVT up): resize to the skip's size.
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FCN8sDecoder(nn.Module):
    """score(stride 32) -> up x2 + score(stride 16) -> up x2 + score(stride 8) -> up x8.

    A 3x3 conv head of ``width`` channels replaces FCN's 4096-channel fc6/fc7 (about 120 M
    parameters in the reference code), which is far too heavy for a desktop plugin.
    """

    def __init__(self, channels: tuple[int, int, int], num_classes: int, width: int = 256) -> None:
        super().__init__()
        c8, c16, c32 = channels
        self.head = nn.Sequential(nn.Conv2d(c32, width, 3, padding=1), nn.ReLU(inplace=True))
        self.score32 = nn.Conv2d(width, num_classes, 1)
        self.score16 = nn.Conv2d(c16, num_classes, 1)
        self.score8 = nn.Conv2d(c8, num_classes, 1)
        for skip in (self.score16, self.score8):  # skips start silent, as in FCN-8s
            nn.init.zeros_(skip.weight)
            nn.init.zeros_(skip.bias)
        self.up32 = _upsampler(num_classes, 2)
        self.up16 = _upsampler(num_classes, 2)
        self.up8 = _upsampler(num_classes, 8)

    def forward(self, f8: Tensor, f16: Tensor, f32: Tensor, out_size: tuple[int, int]) -> Tensor:
        s = self.score32(self.head(f32))
        s = _match(self.up32(s), f16.shape[-2:]) + self.score16(f16)
        s = _match(self.up16(s), f8.shape[-2:]) + self.score8(f8)
        # Full-size logits in NCHW: bilinear resizing of K channels runs about twice as fast
        # there as in channels-last on CPU, and the merge needs them NCHW anyway.
        return _match(self.up8(s).contiguous(), out_size)
