"""`python -m model_core bench` writes its JSON and Markdown report (tiny config, small raster)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_report(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "model_core", "bench", "--out", str(out), "--backbone",
         "mobilenetv3_small_050", "--patch-size", "96", "--rasters", "300", "--repeats", "1",
         "--batch-size", "2", "--threads", "1", "--no-default-model"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    names = ("fctl", "fctl_exact", "baseline")
    assert set(report["patch"]) == set(names)
    for name in names:
        assert report["patch"][name]["batch2"]["per_patch_s"] > 0
    for name in names:
        run = report["raster"]["300"][name]
        assert run["wall_s"] > 0 and run["peak_rss_mb"] > 50
    # raster_N is the default mode (shared context), beside its multiply-add floor
    ratios = report["ratios"]
    assert ratios["raster_300"] == pytest.approx(
        report["raster"]["300"]["fctl"]["wall_s"] / report["raster"]["300"]["baseline"]["wall_s"])
    assert ratios["raster_300_exact"] == pytest.approx(
        report["raster"]["300"]["fctl_exact"]["wall_s"]
        / report["raster"]["300"]["baseline"]["wall_s"])
    assert ratios["per_patch_exact_floor"] > ratios["per_patch_floor"] > 1.0
    assert ratios["raster_300_floor"] > ratios["per_patch_floor"]   # + the shared map
    assert "default_model" not in report
    assert {"encoder", "lcf", "ale", "decoder"} <= set(report["profile"]["fctl"])
    assert set(report["profile"]["baseline"]) >= {"encoder", "decoder"}
    assert ratios["per_patch"] == pytest.approx(
        report["patch"]["fctl"]["batch2"]["per_patch_s"]
        / report["patch"]["baseline"]["batch2"]["per_patch_s"])
    mem = report["memory"]
    # per-patch contexts run the encoder on two images at once
    assert mem["fctl_exact"]["activations_fp32_mb"] > mem["baseline"]["activations_fp32_mb"]
    for name in names:
        assert mem[name]["activations_bf16_mb"] > 0
    assert mem["fctl"]["weights_mb"] > mem["baseline"]["weights_mb"] > 0
    md = (out / "bench.md").read_text()
    assert "| activation MB per patch, batched, bf16 |" in md
    assert "| s per patch (batch2), exact context |" in md
    assert "| 300 x 300 wall s |" in md and "multiply-add floor" in md
    assert f"| {ratios['raster_300_floor']:.2f}x |" in md
    assert "| 300 x 300 wall s, exact context |" in md
    for name in ("fctl_exact", "baseline"):
        assert report["raster"]["300"][name]["read_ms_per_patch"] > 0
    assert "| 300 x 300 reading ms per patch (one thread), exact context |" in md


@pytest.mark.slow
def test_bench_runs_without_gdal(tmp_path):
    """The GPU machines have no GDAL: the per-patch part runs, the raster part is skipped."""
    out = tmp_path / "bench"
    code = ("import sys; sys.modules['osgeo'] = None; from model_core.cli import main; "
            f"sys.exit(main(['bench', '--out', {str(out)!r}, '--backbone', "
            "'mobilenetv3_small_050', '--patch-size', '64', '--repeats', '1', "
            "'--batch-size', '1', '--threads', '1', '--no-default-model']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GDAL is not installed: whole-raster benchmarks skipped" in proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["raster"] == {} and report["patch"]["fctl"]["batch1"]["per_patch_s"] > 0


def test_reading_benchmark_reads_every_patch_with_several_threads(tmp_path):
    from model_core.bench.rasters import _synthetic_raster, time_reads
    from model_core.config import FCtLConfig

    raster = tmp_path / "r.tif"
    _synthetic_raster(raster, 400)
    cfg = FCtLConfig(backbone="mobilenetv3_small_050", patch_size=96, num_classes=7)
    for workers in (1, 3):
        got = time_reads(raster, cfg, workers)
        assert got["workers"] == workers and got["read_s"] > 0
        assert got["read_ms_per_patch"] == pytest.approx(1000 * got["read_s"] / 64)


def test_multiply_add_floor_counts_the_shared_map(tmp_path):
    """The floor of a whole raster = (patches x FCtL's multiply-adds + the shared map's) /
    (patches x the baseline's), checked against a count by hand of the pieces."""
    import torch

    from model_core.bench.macs import encoder_macs_per_pixel, floors, patch_macs, macs
    from model_core.bench.patches import build
    from model_core.config import FCtLConfig
    from model_core.inference.plan import make_plan

    base = dict(backbone="mobilenetv3_small_050", patch_size=64, num_classes=3)
    fctl = build(FCtLConfig(**base), torch.device("cpu"))
    bl = build(FCtLConfig.baseline(**base), torch.device("cpu"))
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert macs(lambda: conv(torch.zeros(1, 3, 10, 10))) == 10 * 10 * 8 * 3 * 9
    got = floors(fctl, bl, torch.device("cpu"), [640])
    n = len(make_plan((640, 640), 64, (0, 0, 640, 640), 1, 1e9).patches)
    shared, base_m = patch_macs(fctl, torch.device("cpu"), True), \
        patch_macs(bl, torch.device("cpu"), False)
    assert got["per_patch"] == pytest.approx(shared / base_m)
    # the x3 map covers the raster at 1/3: at least (640/3)^2 downsampled pixels are encoded
    extra = got["raster_640"] * n * base_m - n * shared
    assert extra >= (640 / 3) ** 2 * encoder_macs_per_pixel(fctl, torch.device("cpu"))


def test_multiply_adds_count_the_cpu_fused_convolutions():
    """The engine's CPU model computes ReLU6 inside its convolutions (oneDNN's fused kernel):
    the counter counts those convolutions as it counts plain ones (it once missed them, and
    the floors came out 1.66x instead of 1.30x)."""
    import torch

    from model_core.bench.macs import macs
    from model_core.models.fuse import ConvActivation, _pointwise_works

    if not _pointwise_works():
        pytest.skip("this PyTorch has no oneDNN fused convolution")
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    fused = ConvActivation(conv, torch.nn.ReLU6())
    x = torch.zeros(1, 3, 10, 10)
    assert macs(lambda: fused(x)) == macs(lambda: conv(x)) == 10 * 10 * 8 * 3 * 9


def test_child_peak_rss_is_its_own_not_the_parents():
    """A benchmarked child reports its own peak: ru_maxrss / wait4 would report at least what
    this process held before it spawned the child (Linux carries it over at exec)."""
    import numpy as np

    from model_core.bench.rss import peak_rss_mb, run_model_core

    held = np.ones(600 * 2 ** 20, np.uint8)     # this process's high-water mark >= 600 MiB
    del held
    assert peak_rss_mb() >= 600
    code, out, peak = run_model_core(["--help"], cwd=ROOT)
    assert code == 0 and "segment" in out
    assert 5 < peak < 300, peak                 # an interpreter and the parser, no torch
