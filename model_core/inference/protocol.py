"""The model protocol: what the engine needs from a network.

:class:`model_core.models.FCtL` implements it, and so does any module the engine is handed
(e.g. the deterministic models of :mod:`model_core.inference.testing`), so every model runs the
same engine path: grid, contexts, batching, test-time augmentation, merge and writing.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

from torch import Tensor

from ..config import FCtLConfig


@runtime_checkable
class SegmentationModel(Protocol):
    """A local segmentation network with FCtL's calling convention.

    Attributes:
        config: the architecture config; the engine reads ``patch_size``, ``in_chans``,
            ``num_classes`` and the context specs (``medium_context``, ``large_context``).
        context_streams: the contexts ("medium", "large") the forward pass needs.
        context_stride: optional; input pixels per cell of :meth:`encode_context`'s features.
            Needed only for shared contexts (``SegmentOptions.shared_context``).
    """

    config: FCtLConfig
    context_streams: tuple[str, ...]

    def __call__(self, local: Tensor, medium: Tensor | None = None, large: Tensor | None = None,
                 *, cached: Mapping[str, Tensor] | None = None,
                 boxes: Mapping[str, Tensor] | None = None) -> Tensor:
        """Logits (B, num_classes, P, P) of local patches (B, in_chans, P, P) in [0, 1].

        ``medium``/``large`` are the context windows resized to P x P; ``cached`` holds the
        :meth:`encode_context` features of contexts shared by all patches (the global context),
        expanded to the batch; ``boxes[name]`` (B, 4) is where each patch lies in that context,
        normalised (x0, y0, x1, y1).
        """

    def encode_context(self, image: Tensor) -> Tensor:
        """Features of a context image (1, in_chans, P, P), passed back through ``cached``."""


def check_model(model: object) -> None:
    """Raise a clear error when ``model`` does not follow :class:`SegmentationModel`."""
    missing = [a for a in ("config", "context_streams", "encode_context") if not hasattr(model, a)]
    if missing or not callable(model):
        raise TypeError(f"{type(model).__name__} is not a segmentation model for the engine: "
                        f"it lacks {missing or ['__call__']} (see "
                        "model_core.inference.protocol.SegmentationModel)")
    bad = [s for s in model.context_streams if s not in ("medium", "large")]  # type: ignore
    if bad:
        raise ValueError(f"unknown context stream(s) {bad}: the engine provides 'medium' and "
                         "'large'")
