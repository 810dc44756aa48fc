"""Process start-up: the command line builds its parser without torch (``--help`` is instant),
and a segment run imports the engine only, not the training code or plotting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from plugin_fixtures import tiny_model  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_parser_imports_no_torch():
    proc = _python("import sys\nfrom model_core.cli import build_parser\nbuild_parser()\n"
                   "print(sorted(m for m in ('torch', 'timm', 'osgeo') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_segment_run_imports_neither_training_nor_plotting(tmp_path, tiny_model):
    import numpy as np
    from osgeo import gdal

    raster = tmp_path / "in.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(raster), 80, 80, 3, gdal.GDT_Byte)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(np.full((80, 80), 40 * b, np.uint8))
    ds = None
    code = ("import sys\nfrom model_core.cli import main\n"
            f"rc = main(['segment', {str(raster)!r}, {str(tmp_path / 'out.tif')!r}, "
            f"'--model', {str(tiny_model)!r}, '--device', 'cpu'])\n"
            "print(rc, sorted(m for m in ('model_core.training.loop', 'matplotlib', "
            "'model_core.bench.run') if m in sys.modules))")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0 []"
