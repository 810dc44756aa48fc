"""Training samples: a local patch I with its contexts M and L, cut by :mod:`model_core.geometry`
(the same windows the inference engine uses), with flips and 90-degree rotations.

Augmentation transforms the whole image before cutting, so the patch, its contexts, the labels
and the boxes of the patch inside the contexts stay consistent by construction. Contexts are
padded with 0 outside the image and resized to the patch size by :func:`model_core.resample.
area_average`, the values of the engine's GDAL averaging reads; the global context is the whole
image resized to P x P (precomputed once per image, and transformed with it: area resizing
commutes with flips and 90-degree rotations).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..config import FCtLConfig
from ..geometry import DIHEDRAL, Window, box_in, context_window, dihedral
from ..resample import area_average, coarser_view
from .data import LabelledImage

def crop_padded(image: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Window (x, y, w, h) of (C, H, W) ``image``, zero outside the image (float32)."""
    c, H, W = image.shape
    out = np.zeros((c, h, w), np.float32)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 > x0 and y1 > y0:
        out[:, y0 - y:y1 - y, x0 - x:x1 - x] = image[:, y0:y1, x0:x1]
    return out


@dataclass
class Sample:
    """A batch (or one sample) of network inputs and labels."""

    local: torch.Tensor                       # (B, C, P, P) in [0, 1]
    contexts: dict[str, torch.Tensor]         # "medium"/"large" -> (B, C, P, P)
    boxes: dict[str, torch.Tensor]            # "medium"/"large" -> (B, 4) normalised boxes
    label: torch.Tensor | None = None         # (B, P, P) int64

    def to(self, device: torch.device | str) -> "Sample":
        return Sample(self.local.to(device), {k: v.to(device) for k, v in self.contexts.items()},
                      {k: v.to(device) for k, v in self.boxes.items()},
                      None if self.label is None else self.label.to(device))


def collate(samples: list[Sample]) -> Sample:
    lab = [s.label for s in samples]
    return Sample(torch.cat([s.local for s in samples]),
                  {k: torch.cat([s.contexts[k] for s in samples]) for k in samples[0].contexts},
                  {k: torch.cat([s.boxes[k] for s in samples]) for k in samples[0].boxes},
                  None if lab[0] is None else torch.cat(lab))


class ContextCutter:
    """Cuts the network inputs of a patch window out of a whole (augmented) image.

    ``scale`` maps raw values to [0, 1] as (raw - lo) / (hi - lo), clipped (the card's scale).
    """

    def __init__(self, config: FCtLConfig, scale: tuple[float, float] = (0.0, 255.0)) -> None:
        self.config = config
        self.size = config.patch_size
        self.lo, self.hi = float(scale[0]), float(scale[1])
        self.streams = config.context_streams

    def resized(self, raw: np.ndarray, integer: bool) -> torch.Tensor:
        """Raw (C, h, w) values area-averaged to P x P as the engine reads them, in [0, 1]."""
        return self.to_unit(area_average(raw, self.size, self.size, integer))

    def to_unit(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return ((x - self.lo) / (self.hi - self.lo)).clamp_(0.0, 1.0)

    def global_context(self, image: np.ndarray) -> torch.Tensor | None:
        """The whole image resized to P x P, when a stream uses the global context."""
        if not any(self.config.context_spec(s) == "global" for s in self.streams):
            return None
        return self.resized(image, np.issubdtype(image.dtype, np.integer))

    def cut(self, image: np.ndarray, patch: Window, label: np.ndarray | None = None,
            global_ctx: torch.Tensor | None = None) -> Sample:
        """Inputs (batch of one) for ``patch`` of ``image`` (C, H, W), optionally its labels."""
        c, H, W = image.shape
        P = self.size
        x, y = int(patch.x), int(patch.y)
        local = self.to_unit(crop_padded(image, x, y, P, P))
        contexts, boxes = {}, {}
        for name in self.streams:
            spec = self.config.context_spec(name)
            win = context_window(patch, spec, P, (W, H))
            if spec == "global":
                if global_ctx is None:
                    global_ctx = self.global_context(image)
                ctx = global_ctx
            else:
                cw = crop_padded(image, int(round(win.x)), int(round(win.y)),
                                 int(round(win.w)), int(round(win.h)))
                ctx = self.resized(cw, np.issubdtype(image.dtype, np.integer))
            contexts[name] = ctx[None]
            boxes[name] = torch.tensor([box_in(patch, win)], dtype=torch.float32)
        lab = None
        if label is not None:
            lab = torch.from_numpy(np.ascontiguousarray(crop_padded(
                label[None], x, y, P, P)[0].astype(np.int64)))[None]
        return Sample(local[None], contexts, boxes, lab)


class RandomSampler:
    """Random patches (uniform position, random image, random dihedral transform) with their
    contexts and labels; ``ignore_index`` fills label pixels outside the image.

    ``coarser`` lists factors of coarser capture: with probability ``coarser_prob`` a sample
    comes from the whole image averaged down by one of them and enlarged back (cubic), which is
    what the engine feeds the network for imagery coarser than the model's pixel size. The
    views are made once per image; labels stay those of the sharp image.
    """

    def __init__(self, images: list[LabelledImage], config: FCtLConfig,
                 scale: tuple[float, float] = (0.0, 255.0), augment: bool = True,
                 seed: int = 0, coarser: tuple[float, ...] = (),
                 coarser_prob: float = 0.5) -> None:
        if not images:
            raise ValueError("no training images")
        small = [im.id for im in images if min(im.size) < config.patch_size]
        if small:
            raise ValueError(f"images {small} are smaller than the {config.patch_size} px patch; "
                             "use a smaller --patch-size")
        self.images = images
        self.cutter = ContextCutter(config, scale)
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        if any(f <= 1.0 for f in coarser):
            raise ValueError(f"coarser-capture factors must be above 1, got {list(coarser)}")
        self.coarser_prob = coarser_prob if coarser else 0.0
        # views[i][0] is image i itself, views[i][v] its v-th coarser view
        self.views = [[im.image] + [coarser_view(im.image, f) for f in coarser] for im in images]
        # The global context of every view under every transform, computed once.
        self._global: dict[tuple[int, int, int, bool], torch.Tensor | None] = {}
        for i, views in enumerate(self.views):
            for v, image in enumerate(views):
                g = self.cutter.global_context(image)
                for k, f in (DIHEDRAL if augment else ((0, False),)):
                    self._global[(i, v, k, f)] = None if g is None else \
                        dihedral(g, k, f).contiguous()

    def sample(self) -> Sample:
        i = int(self.rng.integers(len(self.images)))
        k, f = DIHEDRAL[int(self.rng.integers(8))] if self.augment else (0, False)
        v = 0
        if self.coarser_prob and self.rng.random() < self.coarser_prob:
            v = 1 + int(self.rng.integers(len(self.views[i]) - 1))
        im = self.images[i]
        img, lab = dihedral(self.views[i][v], k, f), dihedral(im.label, k, f)
        P = self.cutter.size
        H, W = lab.shape
        x, y = int(self.rng.integers(0, W - P + 1)), int(self.rng.integers(0, H - P + 1))
        return self.cutter.cut(img, Window(x, y, P, P), lab, self._global[(i, v, k, f)])

    def batch(self, n: int) -> Sample:
        return collate([self.sample() for _ in range(n)])
