"""The FCtL local segmentation network (Sec. 3, Fig. 4).

Three streams (local patch I, medium context M, large context L), resized to the patch size,
share one encoder and run through it as one batched call. At the stride-32 level the local
features are fused as X_I + LCF(X_I, X_M, X_L) + ALE(X_I, X~_M, X~_L) (Sec. 3.5) and decoded by
an FCN-8s-style decoder with the local stream's skips at strides 16 and 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from ..config import FCtLConfig, parse_context_size
from .ale import ALE, ConcatFusion, crop_to_patch
from .backbone import Encoder
from .decoder import FCN8sDecoder
from .lcc import Box
from .lcf import LCF


class FCtL(nn.Module):
    """FCtL network, or the FCN-8s baseline when the config uses no context.

    Inputs are float tensors in [0, 1] of shape (B, in_chans, H, W); normalisation by the config's
    mean/std happens inside. ``boxes`` gives, per context, where the local patch lies inside the
    context window as normalised (x0, y0, x1, y1), a tuple for all samples or a (B, 4) tensor;
    contexts given as a multiple or in pixels default to the centred box. ``cached`` holds
    precomputed stride-32 context features (e.g. the global context, encoded once per raster
    with :meth:`encode_context`); a cached context needs no image.
    """

    def __init__(self, config: FCtLConfig, backbone_weights: str | Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config.backbone, config.in_chans, backbone_weights,
                               **config.backbone_kwargs)
        c8, c16, c32 = self.encoder.channels
        self.register_buffer("mean", torch.tensor(config.input_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.input_std).view(1, -1, 1, 1), persistent=False)
        self.lcf = None
        if config.uses_lcf:
            self.lcf = LCF(c32, config.lcf_contexts, key_channels=config.key_channels,
                           heads=config.heads, positional=config.positional,
                           fusion=config.fusion, reduction=config.mcf_reduction,
                           output=config.lcf_output, attention_scale=config.attention_scale)
        self.ale: nn.Module | None = None
        if config.ale == "concat":
            self.ale = ConcatFusion(c32, config.ale_refs)
        elif config.uses_ale:
            self.ale = ALE(c32, config.ale_refs, config.ale, config.lfi_kernels,
                           config.lfi_activation)
        self.decoder = FCN8sDecoder((c8, c16, c32), config.num_classes, config.decoder_channels)
        # Images per encoder and decoder call; 0 (GPU): all images of all streams in one call.
        # On CPU the Predictor sets :meth:`cpu_call_chunk`, so that full-size activations stay
        # in cache while the stride-32 context fusion stays batched (its small matrices gain
        # from it). The results are the same up to float rounding.
        self.call_chunk = 0

    #: Input pixels per cell of the context features (:meth:`encode_context`, the LCF level).
    context_stride = 32

    # ---------------------------------------------------------------- helpers
    def cpu_call_chunk(self, cache_bytes: int = 10 * 2**20) -> int:
        """Images per encoder/decoder call on a CPU: as many as keep the stem's output (the
        largest activation of the usual backbones) within ``cache_bytes`` of fp32, at least 1.

        Measured on 2 Zen 4 cores, FCtL per patch, batch 4: efficientnet_lite0 at 256 px (2 MiB
        per image, chunk 5: the batch in one call) 11.9 ms batched vs 15.8 ms image by image; at
        508 px (7.9 MiB, chunk 1) 60 vs 44 ms; vgg16 at 256 px (16 MiB, chunk 1) 192 vs 159 ms."""
        stem = next((m for m in self.encoder.modules() if isinstance(m, nn.Conv2d)), None)
        if stem is None:
            return 1
        p = self.config.patch_size
        side = -(-p // stem.stride[0]) * -(-p // stem.stride[1])
        per_image = stem.out_channels * side * 4
        return max(1, cache_bytes // per_image)

    @property
    def context_streams(self) -> tuple[str, ...]:
        return self.config.context_streams

    def default_box(self, name: str) -> Box:
        spec = self.config.context_spec(name)
        if spec == "global":
            raise ValueError(f"the {name} context is the whole raster: pass the patch's box "
                             "inside it (normalised x0, y0, x1, y1) in `boxes`")
        w, h = parse_context_size(spec, self.config.patch_size)
        fx, fy = self.config.patch_size / w, self.config.patch_size / h
        return (0.5 - fx / 2, 0.5 - fy / 2, 0.5 + fx / 2, 0.5 + fy / 2)

    def feature_coverage(self, image_size: tuple[int, int], cells: tuple[int, int]
                         ) -> tuple[float, float]:
        """Share (x, y) of an input of ``image_size`` that ``cells`` stride-32 cells cover: VGG16's
        15 cells cover 480 of 508 px (0.945), padded encoders' 16 cells 512 of 508 (1.008)."""
        s = self.encoder.reductions[-1]
        return cells[1] * s / image_size[1], cells[0] * s / image_size[0]

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @torch.no_grad()
    def encode_context(self, image: Tensor) -> Tensor:
        """Stride-32 features of a context image, to pass back later through ``cached``."""
        return self.encoder(self.normalize(image))[2]

    # ---------------------------------------------------------------- forward
    def forward(self, local: Tensor, medium: Tensor | None = None, large: Tensor | None = None, *,
                cached: Mapping[str, Tensor] | None = None,
                boxes: Mapping[str, Box | Tensor] | None = None) -> Tensor:
        cached = dict(cached or {})
        images = {"medium": medium, "large": large}
        b = local.shape[0]
        run = [local]
        order = []
        for name in self.context_streams:
            if name in cached:
                continue
            img = images[name]
            if img is None:
                raise ValueError(f"this model needs the {name} context: pass `{name}` "
                                 "or its precomputed features in `cached`")
            if img.shape != local.shape:
                raise ValueError(f"{name} context has shape {tuple(img.shape)}, expected "
                                 f"{tuple(local.shape)} (contexts are resized to the patch size)")
            run.append(img)
            order.append(name)
        images = torch.cat(run, dim=0)
        n = self.call_chunk
        if 0 < n < images.shape[0]:
            per = [self.encoder(self.normalize(images[j:j + n]))
                   for j in range(0, images.shape[0], n)]
            feats = [torch.cat([f[level] for f in per]) for level in range(3)]
        else:
            feats = self.encoder(self.normalize(images))   # one batched encoder call
        f8, f16, f32_all = feats[0][:b], feats[1][:b], feats[2]
        x_i = f32_all[:b]
        ctx = {name: f32_all[b * (i + 1): b * (i + 2)] for i, name in enumerate(order)}
        for name, f in cached.items():
            if name in self.context_streams:
                ctx[name] = f.to(x_i.dtype)
        box = {name: (boxes or {}).get(name) for name in self.context_streams}
        box = {name: (v if v is not None else self.default_box(name)) for name, v in box.items()}
        cover = self.feature_coverage(tuple(local.shape[-2:]), tuple(x_i.shape[-2:]))
        if cover != (1.0, 1.0):
            box = {name: align_box(v, *cover) for name, v in box.items()}

        fused = x_i
        if self.lcf is not None:
            fused = fused + self.lcf(x_i, ctx, box)
        if self.ale is not None:
            size = tuple(x_i.shape[-2:])
            crops = {r: crop_to_patch(ctx[r], box[r], size) for r in self.config.ale_refs}
            fused = fused + self.ale(x_i, crops)
        size = tuple(local.shape[-2:])
        if 0 < n < b:
            return torch.cat([self.decoder(f8[j:j + n], f16[j:j + n], fused[j:j + n], size)
                              for j in range(0, b, n)])
        return self.decoder(f8, f16, fused, size)


def align_box(box: Box | Tensor, fx: float, fy: float) -> Box | Tensor:
    """A patch box (normalised in its context window) in the coordinates of the context's feature
    grid, when stride-32 cells cover a share (fx, fy) of each image, from its top-left corner.

    The local features cover [0, f] of the patch, the context's cover [0, f] of the window: the
    patch's covered part starts at x0 / f of the context's grid and spans (x1 - x0) of it (both
    grids have the same number of cells). Used for LCC's offsets and ALE's crops alike.
    """
    if isinstance(box, Tensor):
        x0, y0, x1, y1 = box.unbind(-1)
        return torch.stack([x0 / fx, y0 / fy, x0 / fx + (x1 - x0), y0 / fy + (y1 - y0)], -1)
    x0, y0, x1, y1 = box
    return (x0 / fx, y0 / fy, x0 / fx + (x1 - x0), y0 / fy + (y1 - y0))


def parameter_counts(model: FCtL) -> dict[str, int]:
    """Parameters per top-level module (encoder, lcf, ale, decoder) and in total."""
    out = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    out["total"] = sum(p.numel() for p in model.parameters())
    return out
