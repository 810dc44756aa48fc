"""Running the model on a batch: device, mixed precision, cached global context and test-time
augmentation (TTA).

TTA as in the paper: {identity, horizontal flip} x {0, 90, 180, 270 degrees}, 8 passes. Each pass
transforms the patch, its contexts and the patch's boxes inside them alike (and uses the global
context's features encoded under the same transform); its logits are transformed back and summed.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..geometry import DIHEDRAL, dihedral
from ..models.fuse import fusable, fuse_activations, fuse_for_inference
from .context_map import SharedContextFeatures, SharedContextLayout
from .patches import Batch

log = logging.getLogger(__name__)

Transform = tuple[int, bool]   # (quarter turns, horizontal flip first)
TRANSFORMS: tuple[Transform, ...] = DIHEDRAL   # test-time augmentation: the 8 of training
IDENTITY: tuple[Transform, ...] = ((0, False),)


def apply_image(x: Tensor, t: Transform) -> Tensor:
    """Transform images (..., H, W): flip left-right, then rotate ``k`` quarter turns."""
    return dihedral(x, *t)


def undo_image(y: Tensor, t: Transform) -> Tensor:
    """Inverse of :func:`apply_image`."""
    k, flip = t
    if k:
        y = torch.rot90(y, -k, dims=(-2, -1))
    return y.flip(-1) if flip else y


def apply_box(box: Tensor, t: Transform) -> Tensor:
    """Normalised boxes (B, 4) = (x0, y0, x1, y1) under the transform of :func:`apply_image`."""
    k, flip = t
    x0, y0, x1, y1 = box.unbind(-1)
    if flip:
        x0, x1 = 1 - x1, 1 - x0
    for _ in range(k):   # a quarter turn of rot90 sends (x, y) to (y, 1 - x)
        x0, y0, x1, y1 = y0, 1 - x1, y1, 1 - x0
    return torch.stack([x0, y0, x1, y1], dim=-1)


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA Ampere+, x86 CPUs with AVX512-BF16
    or AMX); elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
            fn = getattr(cpu, probe, None)
            if fn is not None and fn():
                return True
    return False


def resolve_precision(precision: str, device: torch.device) -> bool:
    """True = run under bf16 autocast.

    ``auto``: bf16 on CUDA GPUs that have it (as the engine always ran there), fp32 on CPUs:
    on this project's CPU with AVX512-BF16 the engine's fused channels-last encoder, called one
    image at a time, is slower in bf16 (29 vs 20 ms per 256 px image, one thread; autocast 32
    ms), and bf16 changes 1.5 % of the bundled model's labels on the DeepGlobe test images, more
    than the 0.5 % we accept (README), whichever part is kept in fp32 (the encoder's features
    already differ). ``fp32``; ``bf16`` (emulated, and slower, where the device lacks it).
    """
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose auto, fp32 or bf16")
    if p == "auto":
        return device.type == "cuda" and native_bf16(device)
    return p == "bf16"


def resolve_device(device: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    name = (device or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but PyTorch sees no CUDA GPU here: use "
                         "--device cpu (or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}: choose auto, cpu or cuda")
    return torch.device(name)


class Predictor:
    """Logits of batches: ``predictor(batch)`` -> float32 numpy (B, K, P, P).

    Patches without any valid pixel are not run (their logits are 0; they only cover nodata).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, tta: bool = False,
                 amp: bool | None = None, channels_last: bool = True) -> None:
        self.device = device
        self.transforms = TRANSFORMS if tta else IDENTITY
        self.amp = (device.type == "cuda") if amp is None else amp
        # bf16 keeps fp32's range (no overflow in the attention logits); fp16 where unsupported.
        self.amp_dtype = torch.bfloat16 if (device.type != "cuda" or
                                            torch.cuda.is_bf16_supported()) else torch.float16
        # NHWC runs the convolutions of batched patches about 2x faster on CPU (oneDNN) and is
        # what tensor cores want on CUDA; the results differ only by float rounding.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        cpu = device.type == "cpu"
        if fusable(model, activations=cpu):
            # BatchNorm folded, ALE's depthwise groups merged, on CPUs activations computed by
            # their convolutions, on a copy: the caller's model stays trainable.
            model = copy.deepcopy(model).eval()
            fuse_for_inference(model)
            if cpu:
                fuse_activations(model)
        model = model.to(device=device, memory_format=self.memory_format)
        if hasattr(model, "call_chunk"):
            # CPU: encoder and decoder a few images at a time, context fusion batched (FCtL).
            model.call_chunk = model.cpu_call_chunk() if device.type == "cpu" else 0
        self.model = model
        # no torch.compile: on CPU it compiled for over 8 minutes for a 300 px raster, again for
        # every batch shape, and gave no speed-up once compiled (36 s for a 5000 px raster)
        self.forward = model
        self.k = int(model.config.num_classes)
        self._cached: dict[Transform, dict[str, Tensor]] = {t: {} for t in self.transforms}
        self.shared: dict[str, SharedContextFeatures] = {}

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.amp:
                with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype):
                    yield
            else:
                yield

    def set_global(self, name: str, image: np.ndarray) -> None:
        """Encode the global context ``image`` (C, P, P) once per transform."""
        x = torch.from_numpy(image[None]).to(self.device).contiguous(
            memory_format=self.memory_format)
        with self._mode():
            for t in self.transforms:
                self._cached[t][name] = self.model.encode_context(apply_image(x, t))

    def context_cells(self) -> tuple[int, int]:
        """(rows, cols) of the features :meth:`encode_context` gives for a P x P image."""
        cfg = self.model.config
        x = torch.zeros(1, cfg.in_chans, cfg.patch_size, cfg.patch_size, device=self.device)
        with self._mode():
            return tuple(self.model.encode_context(x.contiguous(
                memory_format=self.memory_format)).shape[-2:])

    def share_context(self, name: str, layout: SharedContextLayout) -> None:
        """Take the ``name`` context's features from a map shared across patches."""
        self.shared[name] = SharedContextFeatures(layout, self._encode_tile, self.transforms)

    def _encode_tile(self, image: np.ndarray, t: Transform) -> Tensor:
        x = torch.from_numpy(image[None]).to(self.device).contiguous(
            memory_format=self.memory_format)
        return undo_image(self.model.encode_context(apply_image(x, t)), t)

    def __call__(self, batch: Batch) -> np.ndarray:
        b = len(batch.patches)
        p = batch.local.shape[-1]
        run = np.flatnonzero(~batch.empty)
        if self.shared:
            with self._mode():   # tiles are encoded even when no patch runs: they stay held
                for name, feats in self.shared.items():
                    feats.update(batch.shared[name])
        if run.size == 0:
            return np.zeros((b, self.k, p, p), np.float32)
        dev = self.device
        fmt = self.memory_format
        local = torch.from_numpy(batch.local[run]).to(dev, non_blocking=True).contiguous(
            memory_format=fmt)
        contexts = {n: torch.from_numpy(a[run]).to(dev, non_blocking=True).contiguous(
            memory_format=fmt) for n, a in batch.contexts.items()}
        boxes = {n: torch.from_numpy(a[run]).to(dev) for n, a in batch.boxes.items()}
        total: Tensor | None = None
        with self._mode():
            for t in self.transforms:
                kw = {n: apply_image(x, t) for n, x in contexts.items()}
                cached = {n: f.expand(len(run), *f.shape[1:])
                          for n, f in self._cached[t].items()}
                for n, feats in self.shared.items():
                    cached[n] = apply_image(feats.sample(batch.shared[n].starts[run], t), t)
                tb = {n: apply_box(x, t) for n, x in boxes.items()}
                logits = self.forward(apply_image(local, t), **kw, cached=cached, boxes=tb)
                if tuple(logits.shape) != (len(run), self.k, p, p):
                    raise ValueError(f"the model returned logits of shape {tuple(logits.shape)}"
                                     f", expected {(len(run), self.k, p, p)} (batch, classes, "
                                     "patch, patch)")
                logits = undo_image(logits.float(), t)
                total = logits if total is None else total + logits
        # (B, K, P, P) C-contiguous for the merge: torch's copy out of channels-last is
        # several times faster than numpy's strided one
        total = total.contiguous()
        if run.size == b:
            return total.cpu().numpy()
        out = np.zeros((b, self.k, p, p), np.float32)
        out[run] = total.cpu().numpy()
        return out
