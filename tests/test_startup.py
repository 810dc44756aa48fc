"""Process start-up: the command line builds its parser without torch (``--help`` is instant),
and a segment run imports the engine only, not the training code or plotting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from plugin_fixtures import tiny_model  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


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


def test_the_command_line_skips_teardown_but_keeps_outputs_exit_codes_and_handlers(tmp_path,
                                                                                   tiny_model):
    """``python -m model_core`` leaves through ``os._exit`` (no teardown of torch's modules):
    piped output is flushed, exit handlers run, outputs are complete, error codes kept."""
    import numpy as np
    from osgeo import gdal, ogr

    from conftest import write_geotiff

    ramp = np.tile(np.arange(80, dtype=np.uint8), (80, 1))
    raster = write_geotiff(tmp_path / "in.tif", np.stack([ramp * (b + 1) for b in range(3)]))
    out, gpkg = tmp_path / "out.tif", tmp_path / "out.gpkg"
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('exit handler ran'))\n"
            f"sys.argv = ['model_core', 'segment', {str(raster)!r}, {str(out)!r}, '--model', "
            f"{str(tiny_model)!r}, '--vector', {str(gpkg)!r}, '--device', 'cpu']\n"
            "runpy.run_module('model_core', run_name='__main__')\n"
            "print('not reached: os._exit')\n")
    proc = _python(code, PYTHONUNBUFFERED="")   # block-buffered, as a pipe is by default
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "exit handler ran" and "not reached" not in proc.stdout
    assert any("80 x 80 px" in line for line in lines), proc.stdout
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize) == (80, 80)
    assert ds.GetRasterBand(1).ReadAsArray().shape == (80, 80)
    vec = ogr.Open(str(gpkg))
    assert vec.GetLayer(0).GetFeatureCount() > 0
    bad = subprocess.run([sys.executable, "-m", "model_core", "segment",
                          str(tmp_path / "missing.tif"), str(tmp_path / "x.tif"), "--model",
                          str(tiny_model)], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 2 and "error:" in bad.stderr
