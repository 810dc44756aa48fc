"""Multiply-adds: the floor under the FCtL / baseline time ratio.

If time were proportional to multiply-adds (convolutions and matrix products, counted by
``torch.utils.flop_counter``), FCtL would cost ``macs(FCtL) / macs(baseline)`` times its baseline.
Element-wise work, softmaxes and reads come on top, so a measured ratio close to this floor
leaves little to gain by tuning; a ratio far above it points at overhead.

Whole rasters in the default mode also pay the shared medium-context map (the downsampled raster
encoded once, in the engine's own tiles with halo, :mod:`model_core.inference.context_map`) and
the global context (one encoding per raster).
"""

from __future__ import annotations

from typing import Callable

import torch

from ..geometry import Window


_FUSED_COUNTED = False


def _count_fused_convolutions() -> None:
    """Teach the counter oneDNN's convolution + activation (the engine's CPU fusion,
    :class:`model_core.models.fuse.ConvActivation`): a convolution's multiply-adds."""
    global _FUSED_COUNTED
    op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
    if _FUSED_COUNTED or op is None:
        return
    from torch.utils.flop_counter import conv_flop_count, register_flop_formula

    @register_flop_formula(op)
    def _conv_pointwise_flops(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        return conv_flop_count(x_shape, w_shape, out_shape, transposed=False)

    _FUSED_COUNTED = True


def macs(fn: Callable[[], object]) -> float:
    """Multiply-adds of the convolutions and matrix products ``fn`` runs."""
    from torch.utils.flop_counter import FlopCounterMode

    _count_fused_convolutions()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2.0


def patch_macs(model: torch.nn.Module, device: torch.device, shared: bool) -> float:
    """Multiply-adds of one patch as the engine runs it (cached global context; with
    ``shared`` the medium context's features are cached too)."""
    from .patches import patch_inputs

    x, kw = patch_inputs(model, 1, device, shared)
    return macs(lambda: model(x, **kw))


def encoder_macs_per_pixel(model: torch.nn.Module, device: torch.device) -> float:
    """Multiply-adds per input pixel of the context encoder (the shared map's cost)."""
    cfg = model.config
    p = cfg.patch_size
    image = torch.rand(1, cfg.in_chans, p, p).to(device)
    return macs(lambda: model.encode_context(image)) / (p * p)


def shared_map_pixels(model: torch.nn.Module, size: int, min_overlap: int = 50) -> float:
    """Downsampled pixels the engine encodes for the shared non-global contexts of a
    ``size`` x ``size`` raster: the whole tile grid, halos included."""
    from ..geometry import context_window
    from ..inference.context_map import SharedContextLayout
    from ..inference.plan import make_plan

    cfg = model.config
    p = cfg.patch_size
    plan = make_plan((size, size), p, (0, 0, size, size), cfg.num_classes, 1e9, min_overlap)
    cells = (p // model.context_stride, p // model.context_stride)
    total = 0.0
    for name in model.context_streams:
        spec = cfg.context_spec(name)
        if spec == "global":
            continue
        windows = []
        for patch in plan.patches:
            win = context_window(patch.window, spec, p, (size, size))
            windows.append(Window(float(round(win.x)), float(round(win.y)),
                                  float(round(win.w)), float(round(win.h))))
        layout = SharedContextLayout(windows, p, model.context_stride, cells,
                                     lambda *_: None)
        for r in range(layout.grid[0]):
            for c in range(layout.grid[1]):
                _, out_w, out_h = layout.tile_window((r, c))
                total += out_w * out_h
    return total


def floors(fctl: torch.nn.Module, baseline: torch.nn.Module, device: torch.device,
           sizes: list[int]) -> dict[str, float]:
    """Multiply-add counts and the floors of the per-patch and whole-raster ratios."""
    from ..inference.plan import make_plan

    per_patch = {"fctl": patch_macs(fctl, device, shared=True),
                 "fctl_exact": patch_macs(fctl, device, shared=False),
                 "baseline": patch_macs(baseline, device, shared=False)}
    enc_px = encoder_macs_per_pixel(fctl, device)
    p = fctl.config.patch_size
    out = {f"gmacs_per_patch_{k}": v / 1e9 for k, v in per_patch.items()}
    out["per_patch"] = per_patch["fctl"] / per_patch["baseline"]
    out["per_patch_exact"] = per_patch["fctl_exact"] / per_patch["baseline"]
    for size in sizes:
        n = len(make_plan((size, size), p, (0, 0, size, size), 1, 1e9).patches)
        extra = shared_map_pixels(fctl, size) * enc_px + p * p * enc_px   # map + global
        out[f"raster_{size}"] = (n * per_patch["fctl"] + extra) / (n * per_patch["baseline"])
        out[f"raster_{size}_exact"] = per_patch["fctl_exact"] / per_patch["baseline"]
    return out
