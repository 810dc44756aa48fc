"""``python -m model_core bench``: FCtL against its FCN-8s baseline, same backbone, decoder, grid.

Writes ``bench.json`` and ``bench.md`` with per-patch latency and throughput, a per-module
profile, whole-raster wall time and peak RSS (each raster run in its own process through the
``segment`` command, exactly as users run it), the FCtL/baseline ratios and the multiply-add
floor of each ratio; for the paper's 508 px setting (``--backbone`` etc.) and for the bundled
default model's own configuration (``default_model``, its raster runs with the model file).
``ratios.raster_N`` is the ratio of the default mode (shared context), ``raster_N_exact`` the
per-patch contexts'. The per-patch part needs no GDAL, so it also runs on GPU machines without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..config import FCtLConfig
from .patches import _device
from .rasters import _synthetic_raster, time_reads  # noqa: F401 - used by the tests
from .report import to_markdown
from .suite import run_section

log = logging.getLogger(__name__)


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rasters:
        try:
            import osgeo  # noqa: F401
        except ImportError:
            log.warning("GDAL is not installed: whole-raster benchmarks skipped")
            args.rasters = []
    base = dict(backbone=args.backbone, patch_size=args.patch_size, num_classes=7,
                medium_context=args.medium_context, large_context=args.large_context)
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}}
    with tempfile.TemporaryDirectory(prefix="fctl-bench-") as tmp:
        tmp = Path(tmp)
        main = run_section({"fctl": FCtLConfig(**base), "baseline": FCtLConfig.baseline(**base)},
                           device, args, tmp)
        report.update(main)
        report["config"] = dict(base)
        if args.default_model:
            report["default_model"] = _default_model_section(device, args, tmp)
    return report


def _default_model_section(device: torch.device, args: argparse.Namespace, tmp: Path
                           ) -> dict[str, Any]:
    """The bundled default model's own configuration; its whole-raster runs use the model file
    itself, so the FCtL rows are exactly what a user's default run costs."""
    from ..checkpoint import DEFAULT_MODEL, read_card
    from ..config import ablation_configs

    cfg = read_card(DEFAULT_MODEL).config
    configs = {"fctl": cfg, "baseline": ablation_configs(cfg)["fcn8s"]}
    section = run_section(configs, device, args, tmp, {"fctl": Path(DEFAULT_MODEL)})
    section["model"] = str(DEFAULT_MODEL)
    return section


def _run(args: argparse.Namespace) -> int:
    report = run_bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    md = to_markdown(report)
    (out / "bench.md").write_text(md)
    print(md)
    print(f"written {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark FCtL against the FCN-8s baseline")
    p.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--patch-size", type=int, default=508)
    p.add_argument("--medium-context", default="x3")
    p.add_argument("--large-context", default="global")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--raster-batch-size", type=int, default=0,
                   help="batch size of the whole-raster runs (0 = the CLI's auto)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raster-repeats", type=int, default=1,
                   help="segment each raster this many times and keep the fastest run")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rasters", type=lambda s: [int(v) for v in s.split(",") if v],
                   default=[2448, 5000], help="raster sides to segment, e.g. 2448,5000 ('' = none)")
    p.add_argument("--no-default-model", dest="default_model", action="store_false",
                   help="skip the section of the bundled default model's own configuration")
    p.set_defaults(func=_run)
