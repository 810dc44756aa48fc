"""Whole-image prediction inside training (validation for model selection).

It walks the same patch grid as the streaming engine (:func:`model_core.geometry.patch_grid`),
encodes the global context once per image and averages the class probabilities of overlapping
patches. The final figures of :mod:`model_core.training.evaluate` go through the streaming engine
itself; this in-memory path only ranks checkpoints during training.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models import FCtL
from .sampling import ContextCutter, grid_batches


@torch.no_grad()
def predict_image(model: FCtL, image: np.ndarray, cutter: ContextCutter, batch_size: int = 4,
                  device: str | torch.device = "cpu", min_overlap: int = 50) -> np.ndarray:
    """Class ids (H, W) of a whole (C, H, W) image."""
    was_training = model.training
    model.eval()
    c, H, W = image.shape
    P = cutter.size
    n = model.config.num_classes
    acc = torch.zeros(n, max(H, P), max(W, P))
    cached: dict[str, torch.Tensor] = {}
    g = cutter.global_context(image)
    for name in model.context_streams:
        if model.config.context_spec(name) == "global" and g is not None:
            cached[name] = model.encode_context(g[None].to(device))
    for wins, s in grid_batches(image, cutter, batch_size, min_overlap):
        s = s.to(device)
        b = s.local.shape[0]
        ctx = {k: v for k, v in s.contexts.items() if k not in cached}
        cache_b = {k: v.expand(b, -1, -1, -1) for k, v in cached.items()}
        logits = model(s.local, ctx.get("medium"), ctx.get("large"), cached=cache_b,
                       boxes=s.boxes)
        prob = logits.float().softmax(1).cpu()
        for w, p in zip(wins, prob):
            x, y = int(w.x), int(w.y)
            acc[:, y:y + P, x:x + P] += p
    model.train(was_training)
    return acc[:, :H, :W].argmax(0).numpy().astype(np.uint8)
