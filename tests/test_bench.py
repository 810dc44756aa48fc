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
         "--batch-size", "2", "--threads", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert set(report["patch"]) == {"fctl", "fctl_shared", "baseline"}
    for name in ("fctl", "fctl_shared", "baseline"):
        assert report["patch"][name]["batch2"]["per_patch_s"] > 0
    for name in ("fctl", "fctl_shared", "baseline"):
        run = report["raster"]["300"][name]
        assert run["wall_s"] > 0 and run["peak_rss_mb"] > 50
    assert report["ratios"]["raster_300"] == pytest.approx(
        report["raster"]["300"]["fctl"]["wall_s"] / report["raster"]["300"]["baseline"]["wall_s"])
    assert {"encoder", "lcf", "ale", "decoder"} <= set(report["profile"]["fctl"])
    assert set(report["profile"]["baseline"]) >= {"encoder", "decoder"}
    assert report["ratios"]["per_patch_shared"] == pytest.approx(
        report["patch"]["fctl_shared"]["batch2"]["per_patch_s"]
        / report["patch"]["baseline"]["batch2"]["per_patch_s"])
    mem = report["memory"]
    # per-patch contexts run the encoder on two images at once
    assert mem["fctl"]["activations_fp32_mb"] > mem["baseline"]["activations_fp32_mb"]
    for name in ("fctl", "fctl_shared", "baseline"):
        assert mem[name]["activations_bf16_mb"] > 0
    assert mem["fctl"]["weights_mb"] > mem["baseline"]["weights_mb"] > 0
    md = (out / "bench.md").read_text()
    assert "| activation MB per patch, batched, bf16 |" in md
    assert "| s per patch (batch2), shared context |" in md
    assert "| 300 x 300 wall s |" in md and "FCtL / baseline" in md
    assert "| 300 x 300 wall s, shared context |" in md
    for name in ("fctl", "baseline"):
        assert report["raster"]["300"][name]["read_ms_per_patch"] > 0
    assert "| 300 x 300 reading ms per patch (one thread) |" in md
    assert report["ratios"]["raster_300_shared"] == pytest.approx(
        report["raster"]["300"]["fctl_shared"]["wall_s"]
        / report["raster"]["300"]["baseline"]["wall_s"])


@pytest.mark.slow
def test_bench_runs_without_gdal(tmp_path):
    """The GPU machines have no GDAL: the per-patch part runs, the raster part is skipped."""
    out = tmp_path / "bench"
    code = ("import sys; sys.modules['osgeo'] = None; from model_core.cli import main; "
            f"sys.exit(main(['bench', '--out', {str(out)!r}, '--backbone', "
            "'mobilenetv3_small_050', '--patch-size', '64', '--repeats', '1', "
            "'--batch-size', '1', '--threads', '1']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "GDAL is not installed: whole-raster benchmarks skipped" in proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["raster"] == {} and report["patch"]["fctl"]["batch1"]["per_patch_s"] > 0


def test_reading_benchmark_reads_every_patch_with_several_threads(tmp_path):
    from model_core.bench import _synthetic_raster, time_reads
    from model_core.config import FCtLConfig

    raster = tmp_path / "r.tif"
    _synthetic_raster(raster, 400)
    cfg = FCtLConfig(backbone="mobilenetv3_small_050", patch_size=96, num_classes=7)
    for workers in (1, 3):
        got = time_reads(raster, cfg, workers)
        assert got["workers"] == workers and got["read_s"] > 0
        assert got["read_ms_per_patch"] == pytest.approx(1000 * got["read_s"] / 64)
