"""Deterministic models that check the engine itself (tests, and self-checks of a deployment).

:class:`ModuloModel` follows :class:`~model_core.inference.protocol.SegmentationModel` exactly
like :class:`model_core.models.FCtL`, so it runs through the same engine path (grid, contexts,
global cache, batching, TTA, merge, writing), but its prediction is a known function of each
pixel: class = (raw value of the first input band) mod num_classes. Any misplaced patch, seam,
border, rotation or flip shows up as wrong labels. It can record what it was given (patches,
contexts, cached features, boxes) so that their content can be checked against the raster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch
from torch import Tensor, nn

from ..config import FCtLConfig

if TYPE_CHECKING:
    from ..checkpoint import ModelCard


class ModuloModel(nn.Module):
    """Logits = one-hot of round(local[:, 0] * value_range) mod num_classes.

    Args:
        config: its patch size, classes, channels and contexts are used as the network's.
        value_range: hi - lo of the input scaling, to recover raw integer values from [0, 1].
        record: keep the inputs of every call in :attr:`calls` (CPU copies).
    """

    def __init__(self, config: FCtLConfig, value_range: float = 255.0, record: bool = False
                 ) -> None:
        super().__init__()
        self.config = config
        self.value_range = float(value_range)
        self.record = record
        self.calls: list[dict] = []
        self.encoded: list[Tensor] = []

    #: The 'features' are the image itself: one cell per pixel (shared contexts sample pixels).
    context_stride = 1

    @property
    def context_streams(self) -> tuple[str, ...]:
        return self.config.context_streams

    def encode_context(self, image: Tensor) -> Tensor:
        """The 'features' of a context are the image itself, so they can be inspected."""
        if self.record:
            self.encoded.append(image.detach().float().cpu().clone())
        return image.clone()

    def forward(self, local: Tensor, medium: Tensor | None = None, large: Tensor | None = None,
                *, cached: Mapping[str, Tensor] | None = None,
                boxes: Mapping[str, Tensor] | None = None) -> Tensor:
        cached = dict(cached or {})
        images = {"medium": medium, "large": large}
        for name in self.context_streams:
            img = cached.get(name, images[name])
            if img is None:
                raise ValueError(f"the {name} context is missing")
            if img.shape[0] != local.shape[0] or img.shape[-2:] != local.shape[-2:]:
                raise ValueError(f"the {name} context has shape {tuple(img.shape)} for patches "
                                 f"{tuple(local.shape)}")
            if boxes is None or name not in boxes:
                raise ValueError(f"no box for the {name} context")
        if self.record:
            self.calls.append({
                "local": local.detach().float().cpu().clone(),
                **{n: t.detach().float().cpu().clone() for n, t in images.items()
                   if t is not None},
                "cached": {n: t.detach().float().cpu().clone() for n, t in cached.items()},
                "boxes": {n: torch.as_tensor(b).detach().float().cpu().clone()
                          for n, b in (boxes or {}).items()},
            })
        raw = torch.round(local[:, 0].float() * self.value_range).long()
        label = torch.remainder(raw, self.config.num_classes)
        return nn.functional.one_hot(label, self.config.num_classes).permute(0, 3, 1, 2).float()


def modulo_model(num_classes: int = 7, patch_size: int = 32, record: bool = False,
                 value_range: float = 255.0, **config) -> tuple[ModuloModel, "ModelCard"]:
    """A :class:`ModuloModel` and a matching model card (classes 'class i', distinct colours).

    ``config`` overrides :class:`FCtLConfig` fields (contexts, channels, ...).
    """
    from ..checkpoint import ClassInfo, ModelCard

    cfg = FCtLConfig(**{"backbone": "none", "num_classes": num_classes,
                        "patch_size": patch_size, **config})
    classes = [ClassInfo(i, f"class {i}", ((37 * i) % 256, (91 * i) % 256, (53 * i + 40) % 256))
               for i in range(num_classes)]
    bands = list(range(1, cfg.in_chans + 1))
    card = ModelCard(cfg, classes, bands=bands, scale=(0.0, value_range), name="modulo")
    return ModuloModel(cfg, value_range, record), card
