"""Per-patch figures: latency, throughput, activation memory and the time per module, of the network
as the engine's own Predictor prepares it."""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from typing import Any

import torch

from ..config import FCtLConfig
from ..registry import DEFAULT_ARCH, create_model


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, precision: str = "auto"):
    """The engine's number format for ``device`` (bf16 where it is native, see --precision)."""
    from ..inference.predict import resolve_precision

    if resolve_precision(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def build(config: FCtLConfig, device: torch.device) -> torch.nn.Module:
    """A random-weight network prepared by the engine's own Predictor (fused for inference,
    NHWC, encoder and decoder in cache-sized chunks on CPU)."""
    from ..inference.predict import Predictor

    torch.manual_seed(0)
    model = create_model(DEFAULT_ARCH, config).eval()
    return Predictor(model, device).model


def patch_inputs(model: torch.nn.Module, batch: int, device: torch.device,
                 shared: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """A batch of patches with the contexts the engine would hand over: the global context's
    features are cached (encoded once per raster), other contexts are images, or with
    ``shared`` cached features too (sampled from the shared map, whose encoding is counted in
    the whole-raster runs). Boxes are per-sample tensors, as the engine passes them."""
    cfg = model.config
    p = cfg.patch_size
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, cfg.in_chans, p, p, generator=g).to(device)
    kwargs: dict[str, Any] = {"boxes": {}, "cached": {}}
    for name in model.context_streams:
        if cfg.context_spec(name) == "global":
            with _autocast(device):
                kwargs["cached"][name] = model.encode_context(
                    torch.rand(1, cfg.in_chans, p, p, generator=g).to(device))
            kwargs["boxes"][name] = torch.tensor([[0.3, 0.3, 0.5, 0.5]] * batch)
            continue
        images = torch.rand(batch, cfg.in_chans, p, p, generator=g).to(device).contiguous(
            memory_format=torch.channels_last)
        kwargs["boxes"][name] = torch.tensor([model.default_box(name)] * batch)
        if shared:
            with torch.inference_mode(), _autocast(device):
                kwargs["cached"][name] = model.encode_context(images)
        else:
            kwargs[name] = images
    return x.contiguous(memory_format=torch.channels_last), kwargs


def time_patches(model: torch.nn.Module, batch: int, device: torch.device, repeats: int,
                 shared: bool = False) -> dict[str, float]:
    """Median seconds per forward of ``batch`` patches, and peak GPU memory on CUDA."""
    x, kw = patch_inputs(model, batch, device, shared)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), _autocast(device):
        model(x, **kw)  # warm-up (cudnn autotune, allocator)
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            model(x, **kw)
            _sync(device)
            times.append(time.perf_counter() - t)
    out = {"batch": batch, "seconds": statistics.median(times)}
    out["per_patch_s"] = out["seconds"] / batch
    out["patches_per_s"] = batch / out["seconds"]
    if device.type == "cuda":
        out["peak_gpu_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def tensor_memory(model: torch.nn.Module, device: torch.device, shared: bool = False
                  ) -> dict[str, float]:
    """MiB of activations one 508 px patch holds at its peak, fp32 and bf16 autocast, counted
    tensor by tensor (:mod:`model_core.bench.memory`, so also on a CPU), with the encoder and
    decoder batched as on CUDA; weights and inputs apart."""
    from .memory import peak_tensor_bytes

    x, kw = patch_inputs(model, 1, device, shared)
    inputs = [x, *kw["cached"].values(), *kw["boxes"].values(),
              *(v for v in kw.values() if isinstance(v, torch.Tensor))]
    weights = [*model.parameters(), *model.buffers()]
    out = {"weights_mb": sum(t.numel() * t.element_size() for t in weights) / 2**20}
    chunk, model.call_chunk = getattr(model, "call_chunk", 0), 0
    try:
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            cast = torch.autocast(device.type, dtype=dtype) if dtype is not None \
                else nullcontext()
            with torch.inference_mode(), cast:
                peak = peak_tensor_bytes(lambda: model(x, **kw), exclude=weights + inputs)
            out[f"activations_{label}_mb"] = peak / 2**20
    finally:
        model.call_chunk = chunk
    return out


def profile_modules(model: torch.nn.Module, device: torch.device, batch: int = 1,
                    shared: bool = False) -> dict[str, float]:
    """Share of one forward's time spent in each top-level module (encoder, lcf, ale, decoder)."""
    x, kw = patch_inputs(model, batch, device, shared)
    spent: dict[str, float] = {}
    starts: dict[str, float] = {}
    hooks = []
    for name, module in model.named_children():
        def pre(_m, _i, name=name):
            _sync(device)
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            _sync(device)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - starts[name]
        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.inference_mode(), _autocast(device):
            model(x, **kw)
            spent.clear()
            _sync(device)
            t = time.perf_counter()
            model(x, **kw)
            _sync(device)
            total = time.perf_counter() - t
    finally:
        for h in hooks:
            h.remove()
    out = {k: v / total for k, v in spent.items()}
    out["other"] = max(0.0, 1.0 - sum(out.values()))
    out["total_s"] = total
    return out


# ----------------------------------------------------------------------------- whole rasters
