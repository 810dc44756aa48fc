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
        self.reductions: tuple[int, int, int] = tuple(self.body.feature_info.reduction())  # type: ignore
        self.name = name
        self.in_chans = in_chans
        self.kwargs = dict(kwargs)
        if weights is not None:
            load_backbone_weights(self, weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        return list(self.body(x))


def _filter_fn(model: nn.Module):
    """timm's own conversion of checkpoints for this architecture (torchvision or original key
    names to timm's), when its module defines one."""
    import sys

    mod = sys.modules.get(type(model).__module__)
    for name in ("checkpoint_filter_fn", "_filter_fn"):
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn
    return None


def _flat(key: str) -> str:
    # features_only wrappers flatten module paths ("features.0" -> "features_0")
    return key.replace(".", "_")


def load_backbone_weights(encoder: "Encoder", path: str | Path) -> int:
    """Initialise ``encoder`` from a local weights file the way timm loads pretrained weights
    (no download): timm's reader (safetensors or a PyTorch file, ``state_dict``/``module.``
    wrappers removed), the architecture's own key conversion (torchvision's VGG names work), and
    timm's adaptation of the first conv when the encoder has other than 3 bands (logged).

    Every tensor the encoder uses must come from the file: a file that fits only partly raises a
    ValueError naming what is missing, mis-shaped or left over. Returns the tensors loaded.
    """
    from timm.models import adapt_input_conv, load_state_dict

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file {path} does not exist")
    full = timm.create_model(encoder.name, pretrained=False, num_classes=0,
                             in_chans=encoder.in_chans, **encoder.kwargs)
    try:
        state = load_state_dict(str(path), device="cpu")
    except Exception as exc:
        raise ValueError(f"cannot read backbone weights from {path}: {exc}") from exc
    fn = _filter_fn(full)
    if fn is not None:
        import inspect

        # timm's filters take (state_dict) or (state_dict, model), by architecture
        state = fn(state, full) if len(inspect.signature(fn).parameters) > 1 else fn(state)
    cfg = getattr(full, "pretrained_cfg", {}) or {}
    first = cfg.get("first_conv")
    firsts = [first] if isinstance(first, str) else list(first or [])
    for name in firsts:
        key = name + ".weight"
        if key in state and state[key].shape[1] != encoder.in_chans:
            log.warning("backbone: first conv %s adapted from %d to %d bands (timm's "
                        "adapt_input_conv)", name, state[key].shape[1], encoder.in_chans)
            state[key] = adapt_input_conv(encoder.in_chans, state[key])
    classifier = cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    by_flat = {_flat(k): v for k, v in state.items()}
    own = encoder.body.state_dict()
    missing = [k for k in own if _flat(k) not in by_flat]
    shapes = [f"{k}: file {tuple(by_flat[_flat(k)].shape)} vs {tuple(v.shape)}"
              for k, v in own.items() if _flat(k) in by_flat and by_flat[_flat(k)].shape != v.shape]
    used = {_flat(k) for k in full.state_dict()}
    extra = [k for k in state if _flat(k) not in used and not k.startswith(classifier)]
    if missing or shapes or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of the encoder's {len(own)} tensors missing "
                         f"(e.g. {missing[:3]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[:2]})")
        if extra:
            parts.append(f"{len(extra)} tensors {encoder.name!r} does not have (e.g. {extra[:3]})")
        raise ValueError(f"{path} does not fit the {encoder.name!r} encoder: "
                         f"{'; '.join(parts)}. Give the ImageNet weights of this timm model "
                         "(timm's or torchvision's key names), or --pretrained none")
    encoder.body.load_state_dict({k: by_flat[_flat(k)] for k in own})
    log.info("backbone: %d/%d tensors loaded from %s", len(own), len(own), path)
    return len(own)
