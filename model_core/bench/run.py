"""Runs the bench sections (see the package docstring) and assembles the report."""

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
        if getattr(args, "dask_only", False):
            from .dask_runs import bench_dask
            report["dask"] = bench_dask(args.dask, tmp, args.dask_workers, args.block_size)
            return report
        main = run_section({"fctl": FCtLConfig(**base), "baseline": FCtLConfig.baseline(**base)},
                           device, args, tmp)
        report.update(main)
        report["config"] = dict(base)
        if args.default_model:
            report["default_model"] = _default_model_section(device, args, tmp)
        if getattr(args, "polygons", None):   # the polygon step alone, see .polygons
            from .polygons import bench_polygons
            report["polygons"] = bench_polygons(args.polygons, tmp, args.polygons_one_pass)
        if getattr(args, "dask", None):   # in process vs a LocalCluster, see .dask_runs
            from .dask_runs import bench_dask
            report["dask"] = bench_dask(args.dask, tmp, args.dask_workers, args.block_size)
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


