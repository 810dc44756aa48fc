"""``python -m model_core info``: parameter counts per module and CPU forward time per patch."""

from __future__ import annotations

import argparse
import time

from .config import FCtLConfig


def describe(config: FCtLConfig, time_forward: bool = True, arch: str | None = None) -> dict:
    """Parameter counts per module and (optionally) the seconds of one patch's forward pass."""
    import torch

    from .models import parameter_counts
    from .registry import DEFAULT_ARCH, create_model   # torch and timm: not for the parser

    model = create_model(arch or DEFAULT_ARCH, config).eval()
    out: dict = {"params": parameter_counts(model)}
    if time_forward:
        p = config.patch_size
        x = torch.rand(1, config.in_chans, p, p)
        kw = {name: torch.rand_like(x) for name in model.context_streams}
        boxes = {n: model.default_box(n) if config.context_spec(n) != "global"
                 else (1 / 3, 1 / 3, 2 / 3, 2 / 3) for n in model.context_streams}
        with torch.inference_mode():
            model(x, **kw, boxes=boxes)  # warm-up
            t = time.perf_counter()
            model(x, **kw, boxes=boxes)
            out["forward_s"] = time.perf_counter() - t
    return out


def _run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    base = dict(backbone=args.backbone, num_classes=args.classes, patch_size=args.patch_size)
    rows = [("FCtL", FCtLConfig(**base)), ("FCN-8s baseline", FCtLConfig.baseline(**base))]
    for title, cfg in rows:
        d = describe(cfg, not args.no_time)
        print(f"{title} ({cfg.backbone}, {cfg.num_classes} classes, {cfg.patch_size} px patch)")
        for name, n in d["params"].items():
            print(f"  {name:<10} {n:>12,d}")
        if "forward_s" in d:
            print(f"  forward per patch on CPU ({torch.get_num_threads()} threads): "
                  f"{d['forward_s']:.2f} s")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameter counts of the FCtL model and its baseline")
    p.add_argument("--backbone", default="vgg16", help="timm backbone (default vgg16)")
    p.add_argument("--classes", type=int, default=7)
    p.add_argument("--patch-size", type=int, default=508)
    p.add_argument("--no-time", action="store_true", help="skip the forward-time measurement")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    p.set_defaults(func=_run)
