"""Helpers of the plugin tests: a tiny random FCtL checkpoint, small RGB rasters, and a
throwaway QGIS profile for qgis_process / the desktop."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, write_geotiff

CLASSES = [("urban", (0, 255, 255)), ("agriculture", (255, 255, 0)), ("rangeland", (255, 0, 255)),
           ("forest", (0, 255, 0)), ("water", (0, 0, 255)), ("barren", (255, 255, 255)),
           ("unknown", (0, 0, 0))]
QGIS_PROCESS = "/usr/bin/qgis_process.bin"


def make_tiny_model(path: Path, backbone: str = "mobilenetv3_small_050", patch: int = 128) -> Path:
    """A random-weight 7-class FCtL checkpoint (global large context) with DeepGlobe's legend."""
    import torch

    from model_core.checkpoint import ClassInfo, ModelCard, save_checkpoint
    from model_core.config import FCtLConfig
    from model_core.models import FCtL

    torch.manual_seed(0)
    cfg = FCtLConfig(backbone=backbone, num_classes=7, patch_size=patch, large_context="global",
                     decoder_channels=32)
    card = ModelCard(cfg, classes=[ClassInfo(i, n, c) for i, (n, c) in enumerate(CLASSES)],
                     ignore_index=6, name="tiny test model")
    model = FCtL(cfg).eval()
    # random FCN-8s skips start silent and one class wins everywhere: wake the stride-8 skip so
    # the untrained model's classes follow the image (results stay visible in screenshots)
    with torch.no_grad():
        torch.nn.init.normal_(model.decoder.score8.weight, std=2.0)
        model.decoder.score32.bias.zero_()
    return save_checkpoint(path, model, card)


def make_rgb(path: Path, size: int = 200, epsg: int = 32631, seed: int = 0, **kw) -> Path:
    """A smooth-ish 3-band uint8 raster (blocks of colour plus noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([(x * 255 // size), (y * 255 // size), ((x + y) * 127 // size)])
    arr = (base + rng.integers(0, 30, base.shape)).clip(0, 255).astype(np.uint8)
    return write_geotiff(path, arr, epsg=epsg, **kw)


def site_packages() -> str:
    """The running interpreter's site-packages (the venv's in `make test`)."""
    return sysconfig.get_paths()["purelib"]


def qgis_env(tmp: Path, plugin_path: Path = ROOT) -> dict[str, str]:
    """Environment for qgis_process.bin with the plugin from ``plugin_path`` enabled in a
    throwaway profile under ``tmp``."""
    xdg = tmp / "xdg"
    ini = xdg / "QGIS" / "QGIS3" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text("[PythonPlugins]\nfctl_qgis=true\n")
    # pytest-qgis points these at its own settings folder: they would hide the profile above
    env = {k: v for k, v in os.environ.items()
           if k not in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH")}
    env.update(QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(xdg),
               QGIS_PLUGINPATH=str(plugin_path), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), site_packages()]),
               XDG_RUNTIME_DIR=str(tmp / "run"))
    (tmp / "run").mkdir(exist_ok=True, mode=0o700)
    return env


def qgis_process(args: list[str], env: dict[str, str], timeout: int = 300
                 ) -> subprocess.CompletedProcess:
    return subprocess.run([QGIS_PROCESS, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random tiny FCtL checkpoint shared by the tests of a module."""
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture
def provider(qgis_iface, qgis_processing):
    """The plugin's Processing provider, registered for one test."""
    import fctl_qgis

    plugin = fctl_qgis.classFactory(qgis_iface)
    plugin.initProcessing()
    yield plugin.provider
    plugin.unload()


@contextlib.contextmanager
def open_dock(iface, model: Path, out_dir: Path):
    """The dock on a clean project and default settings (it restores the last choices), with
    ``model``, ``out_dir`` and the CPU chosen; unloaded and cleaned up afterwards."""
    from qgis.core import QgsProject, QgsSettings

    from fctl_qgis.dock import FCtLDock

    def clean() -> None:
        QgsSettings().remove("fctl")
        QgsProject.instance().removeAllMapLayers()
        QgsProject.instance().layerTreeRoot().removeAllChildren()

    clean()
    d = FCtLDock(iface)
    d.model_widget.setFilePath(str(model))
    d.output_widget.setFilePath(str(out_dir))
    d.device_combo.setCurrentIndex(max(0, d.device_combo.findData("cpu")))
    try:
        yield d
    finally:
        d.unload()
        d.deleteLater()
        clean()


def wait_for_task(dock, timeout: float = 120.0):
    """Process events until the dock's task ends; its outcome."""
    import time

    from qgis.PyQt.QtCore import QCoreApplication

    end = time.monotonic() + timeout
    while dock.task is not None and time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    assert dock.task is None, "the segmentation task did not finish in time"
    for _ in range(20):   # the task's completion signals (temporary mask removal)
        QCoreApplication.processEvents()
    return dock.last_outcome
