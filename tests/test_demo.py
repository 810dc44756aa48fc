"""``make demo`` (tools/demo.py): the qgis_process command path, the summary and the preview;
the engine does not know the plugin."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, write_geotiff
from model_core.checkpoint import ClassInfo, ModelCard, save_checkpoint
from model_core.config import FCtLConfig

sys.path.insert(0, str(ROOT / "tools"))
import demo  # noqa: E402  (tools/demo.py: the driver of `make demo`)


def test_sample_raster_is_a_small_georeferenced_rgb_geotiff():
    from osgeo import gdal

    assert demo.SAMPLE.stat().st_size < 5 * 2 ** 20
    ds = gdal.Open(str(demo.SAMPLE))
    assert ds.GetDriver().ShortName == "GTiff" and ds.RasterCount == 3
    assert ds.GetProjection() and abs(ds.GetGeoTransform()[1] - 0.5) < 1e-3
    readme = (demo.SAMPLE.parent / "README.md").read_text()
    assert "CC BY-SA 4.0" in readme and "SpaceNet" in readme


def test_qgis_environment_enables_the_plugin_in_a_throwaway_profile(tmp_path):
    env = demo.qgis_environment(tmp_path)
    ini = tmp_path / "QGIS" / "QGIS3" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    assert "fctl_qgis=true" in ini.read_text()
    assert env["QGIS_PLUGINPATH"] == str(demo.ROOT) and env["XDG_DATA_HOME"] == str(tmp_path)
    assert env["QT_QPA_PLATFORM"] == "offscreen"
    assert str(demo.ROOT) in env["PYTHONPATH"].split(":")
    cmd = demo.segment_command(Path("a.tif"), Path("o.tif"), Path("o.gpkg"), Path("m.st"))
    assert cmd[:4] == [demo.QGIS_PROCESS, "--json", "run", "fctl:segment"]
    assert "--INPUT=a.tif" in cmd and "--OUTPUT_VECTOR=o.gpkg" in cmd and "--MODEL=m.st" in cmd


def test_class_areas_and_preview(tmp_path):
    cls = np.zeros((20, 30), np.uint8)
    cls[:, 10:] = 2
    cls[:5, :10] = 255                                     # nodata
    write_geotiff(tmp_path / "c.tif", cls, pixel=2.0, nodata=255)
    areas, shares = demo.class_areas(tmp_path / "c.tif", {0: "water", 2: "forest"})
    assert areas == {"water": 15 * 10 * 4.0, "forest": 20 * 20 * 4.0}
    assert shares["forest"] == pytest.approx(400 / 550)
    write_geotiff(tmp_path / "img.tif", np.full((3, 20, 30), 90, np.uint8))
    png = demo.save_preview(tmp_path / "img.tif", tmp_path / "c.tif",
                            {0: (0, 0, 255), 2: (0, 255, 0)}, {0: "water", 2: "forest"},
                            tmp_path / "p.png")
    from osgeo import gdal
    assert gdal.Open(str(png)).RasterXSize > 400


def test_missing_sample_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="sample raster"):
        demo.run_demo(tmp_path / "none.tif", tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(not Path(demo.QGIS_PROCESS).is_file(), reason="QGIS is not installed")
def test_demo_runs_fctl_segment_through_qgis_process(tmp_path, capsys):
    """The real command path (qgis_process.bin + the plugin), with a tiny model for speed."""
    torch.manual_seed(0)
    from model_core.models import FCtL

    config = FCtLConfig(backbone="mobilenetv3_small_050", num_classes=3, patch_size=64,
                        decoder_channels=16, input_mean=(0.5,) * 3, input_std=(0.25,) * 3)
    card = ModelCard(config, [ClassInfo(0, "void", (0, 0, 0)), ClassInfo(1, "dark", (0, 0, 255)),
                              ClassInfo(2, "bright", (255, 255, 0))], ignore_index=0, gsd=0.5)
    model = save_checkpoint(tmp_path / "tiny.safetensors", FCtL(config).eval(), card)
    sample = tmp_path / "sample.tif"
    shutil.copyfile(demo.SAMPLE, sample)
    before = sample.read_bytes()
    rc = demo.main(["--input", str(sample), "--out", str(tmp_path / "out"), "--model", str(model)])
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, captured.err
    assert sample.read_bytes() == before                  # input untouched
    for name in ("classes.tif", "classes.gpkg", "preview.png"):
        assert (tmp_path / "out" / name).is_file(), name
    assert "classified raster:" in out and "area (m2)" in out
    areas, _ = demo.class_areas(tmp_path / "out" / "classes.tif", {1: "dark", 2: "bright"})
    total = sum(areas.values())
    assert total == pytest.approx(300 * 300, rel=0.01)     # 600 x 600 px of 0.5 m


def test_engine_does_not_know_the_plugin():
    """model_core is the engine: the demo driver (qgis_process, the plugin's name, QGIS profiles)
    lives in tools/, and no engine module names the plugin's package or QGIS."""
    assert not (ROOT / "model_core" / "demo.py").exists()
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "model_core").rglob("*.py")
                 if "qgis_process" in p.read_text() or "import fctl_qgis" in p.read_text()
                 or "from fctl_qgis" in p.read_text()]
    assert offenders == []
    assert "tools/demo.py" in (ROOT / "Makefile").read_text()
