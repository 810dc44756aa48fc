"""Shared encoder of the three streams (Sec. 3.3.1): a timm model in ``features_only`` mode.

Any timm model with feature maps at strides 8, 16 and 32 works (``vgg16``, ``pvt_v2_b2``,
``efficientnet_lite0``, ``resnet50`` ...). Weights are never downloaded: an optional local file
(safetensors or a plain PyTorch state dict, loaded with ``weights_only=True``) initialises it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)


class Encoder(nn.Module):
    """Backbone returning the feature maps at strides 8, 16 and 32 (skips and LCF/ALE input)."""

    def __init__(self, name: str, in_chans: int = 3, weights: str | Path | None = None,
                 **kwargs) -> None:
        super().__init__()
        probe = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_chans,
                                  **kwargs)
        reductions = probe.feature_info.reduction()
        indices = []
        for stride in STRIDES:
            hits = [i for i, r in enumerate(reductions) if r == stride]
            if not hits:
                raise ValueError(f"backbone {name!r} has no feature map at stride {stride} "
                                 f"(it gives strides {reductions}); choose another backbone")
            indices.append(hits[-1])
        del probe
        self.body = timm.create_model(name, pretrained=False, features_only=True,
                                      in_chans=in_chans, out_indices=tuple(indices), **kwargs)
        self.channels: tuple[int, int, int] = tuple(self.body.feature_info.channels())  # type: ignore
        self.name = name
        if weights is not None:
            load_backbone_weights(self.body, weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))


def load_backbone_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local weights file into a timm features_only model, matching keys by name."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"no tensor of {path} matches the backbone's parameters; "
                         "is it a checkpoint of the same timm model?")
    module.load_state_dict(matched, strict=False)
    log.info("backbone: %d/%d tensors loaded from %s", len(matched), len(own), path)
