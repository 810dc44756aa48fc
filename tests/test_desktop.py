"""The real QGIS desktop under Xvfb: the plugin installed from `make package`'s zip and enabled in
a fresh profile, the dock opened, a segmentation run from it, the styled results in the layer
tree, and a screenshot that shows them (copied to docs/screenshot.png for the README when that is
absent or FCTL_UPDATE_SCREENSHOT=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from plugin_fixtures import CLASSES, make_rgb, make_tiny_model, site_packages

sys.path.insert(0, str(ROOT / "tools"))
import package  # noqa: E402

pytestmark = pytest.mark.slow
TIMEOUT = 420   # a second QGIS run (unload during a run) and a loaded machine

# Runs inside QGIS (--code): drives the dock like a user, then reports and quits.
SCRIPT = r'''
import json, os, sys, time, traceback
from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface
import qgis.utils

cfg = json.load(open(os.environ["FCTL_DESKTOP_CONFIG"]))
report = {"steps": [], "exceptions": []}

def excepthook(*exc):   # exceptions in Qt slots and callbacks (QGIS would show a dialog)
    report["exceptions"].append("".join(traceback.format_exception(*exc)))

sys.excepthook = excepthook

def save():
    with open(cfg["report"], "w") as f:
        json.dump(report, f, indent=1)

def finish(code):
    report["exit"] = code
    save()
    QgsApplication.exit(code)

def fail():
    report["error"] = traceback.format_exc()
    finish(1)

def start():
    try:
        report["plugins"] = sorted(qgis.utils.active_plugins)
        plugin = qgis.utils.plugins["fctl_qgis"]
        report["plugin_file"] = qgis.utils.sys.modules["fctl_qgis"].__file__
        save()
        layer = iface.addRasterLayer(cfg["raster"], "aerial scene")
        iface.mainWindow().showMaximized()
        plugin.action.trigger()                     # the toolbar/menu action opens the dock
        dock = plugin.dock
        report["dock_visible"] = dock.isVisible()
        report["torch_at_open"] = "torch" in qgis.utils.sys.modules
        report["t_open"] = time.perf_counter()
        wait_for_engine()
    except Exception:
        fail()

def wait_for_engine():
    # the dock loads torch in a background task after it is shown; the devices are named then
    try:
        dock = plugin_dock()
        if not dock.device_combo.itemText(0).startswith("Auto ("):
            if time.perf_counter() - report["t_open"] > 120:
                report["error"] = "the engine did not load in 120 s: " + dock.status.text()
                return finish(1)
            return QTimer.singleShot(200, wait_for_engine)
        report["engine_seconds"] = time.perf_counter() - report["t_open"]
        run_dock()
    except Exception:
        fail()

def run_dock():
    try:
        dock = plugin_dock()
        layer = QgsProject.instance().mapLayersByName("aerial scene")[0]
        if cfg.get("model"):
            dock.model_widget.setFilePath(cfg["model"])
        report["legend"] = [dock.legend_list.item(i).text() for i in range(dock.legend_list.count())]
        dock.output_widget.setFilePath(cfg["out"])
        dock.device_combo.setCurrentIndex(0)
        report["device_label"] = dock.device_combo.currentText()
        dock.layer_combo.setLayer(layer)
        dock.finished.connect(done)
        report["t0"] = time.perf_counter()
        report["started"] = dock.run()
        report["status_running"] = dock.status.text()
        save()                                      # breadcrumbs, should QGIS die meanwhile
        if not report["started"]:
            finish(1)
    except Exception:
        fail()

def done(outcome):
    try:
        report["seconds_dock"] = time.perf_counter() - report["t0"]
        report["ok"] = outcome.ok
        report["error"] = outcome.error
        if outcome.ok:
            r = outcome.result
            report["engine"] = {"seconds": r.seconds, "device": r.device, "grid": list(r.grid),
                                "patches": r.patches, "size": [r.width, r.height]}
        root = QgsProject.instance().layerTreeRoot()
        group = root.findGroup("FCtL results")
        report["group"] = [n.name() for n in group.findLayers()] if group else None
        report["renderers"] = [n.layer().renderer().type() for n in group.findLayers()] if group else []
        report["status"] = plugin_dock().status.text()
        canvas = iface.mapCanvas()
        canvas.setExtent(QgsProject.instance().mapLayersByName("aerial scene")[0].extent())
        canvas.refresh()
        QTimer.singleShot(4000, shoot)              # let the canvas render the results
    except Exception:
        fail()

def plugin_dock():
    return qgis.utils.plugins["fctl_qgis"].dock

def shoot():
    try:
        report["screenshot"] = iface.mainWindow().grab().save(cfg["screenshot"])
        if not cfg.get("big_raster"):
            return finish(0 if report.get("ok") else 1)
        # then unload the plugin while a second, longer run is in progress
        dock = plugin_dock()
        big = iface.addRasterLayer(cfg["big_raster"], "big scene")
        dock.layer_combo.setLayer(big)
        dock.output_widget.setFilePath(cfg["out2"])
        dock.batch_spin.setValue(1)
        dock.vector_check.setChecked(False)
        report["unload"] = {"started": dock.run(), "t0": time.perf_counter()}
        QTimer.singleShot(200, unload_when_running)
    except Exception:
        fail()

def unload_when_running():
    try:
        u = report["unload"]
        task = plugin_dock().task
        if task is not None and task.progress() <= 0 and time.perf_counter() - u["t0"] < 60:
            return QTimer.singleShot(100, unload_when_running)
        u["was_running"] = task is not None and task.progress() > 0
        u["unloaded"] = qgis.utils.unloadPlugin("fctl_qgis")
        u["seconds_unload"] = time.perf_counter() - u["t0"]
        QTimer.singleShot(3000, after_unload)       # the task's queued finished(), deletions
    except Exception:
        fail()

def after_unload():
    try:
        u = report["unload"]
        out2 = cfg["out2"]
        u["leftover"] = sorted(os.listdir(out2)) if os.path.isdir(out2) else []
        finish(0 if report.get("ok") else 1)
    except Exception:
        fail()

QTimer.singleShot(1500, start)
'''


def run_desktop(tmp: Path, raster: Path, model: Path | None, zip_path: Path,
                timeout: int = TIMEOUT, big_raster: Path | None = None) -> dict:
    """Install ``zip_path`` in a fresh profile, start QGIS under Xvfb with :data:`SCRIPT` and
    return its report (with the QGIS output under "log")."""
    profiles = tmp / "profiles"
    package.deploy(zip_path, profiles / "profiles")
    script = tmp / "drive_dock.py"
    script.write_text(SCRIPT)
    cfg = {"raster": str(raster), "model": str(model) if model else None,
           "out": str(tmp / "results"), "screenshot": str(tmp / "screenshot.png"),
           "report": str(tmp / "report.json"), "out2": str(tmp / "results_unloaded"),
           "big_raster": str(big_raster) if big_raster else None}
    (tmp / "config.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items()
           if k not in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH", "QT_QPA_PLATFORM",
                        "QGIS_PLUGINPATH")}
    # the venv's torch/timm, but NOT the repository: the plugin must use its bundled engine
    env.update(PYTHONPATH=site_packages(), FCTL_DESKTOP_CONFIG=str(tmp / "config.json"),
               HF_HUB_OFFLINE="1", XDG_RUNTIME_DIR=str(tmp / "run"))
    (tmp / "run").mkdir(mode=0o700, exist_ok=True)
    cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis", "--nologo",
           "--noversioncheck", "--profiles-path", str(profiles), "--code", str(script)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        log = proc.stdout[-4000:] + proc.stderr[-4000:]
        (tmp / "qgis.log").write_text(proc.stdout + proc.stderr)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"QGIS did not finish within {timeout} s; output:\n"
                             f"{(exc.stdout or b'')[-3000:]!r}\n{(exc.stderr or b'')[-3000:]!r}")
    report_path = tmp / "report.json"
    assert report_path.is_file(), f"QGIS exited ({proc.returncode}) without a report:\n{log}"
    report = json.loads(report_path.read_text())
    report["log"] = log
    report["returncode"] = proc.returncode
    return report


def image_array(path: Path) -> np.ndarray:
    from qgis.PyQt.QtGui import QImage

    img = QImage(str(path)).convertToFormat(QImage.Format_RGB888)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    arr = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())
    return arr[:, : img.width() * 3].reshape(img.height(), img.width(), 3).copy()


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="needs xvfb-run and the QGIS desktop")
def test_dock_segments_in_real_qgis(tmp_path, qgis_app):
    model = make_tiny_model(tmp_path / "tiny.safetensors")
    default = ROOT / package.DEFAULT_MODEL
    zip_path = package.build(tmp_path / "dist" / "fctl_qgis.zip",
                             default_model=None if default.is_file() else model)
    raster = make_rgb(tmp_path / "scene.tif", size=300)
    big = make_rgb(tmp_path / "big.tif", size=900)
    report = run_desktop(tmp_path, raster, model, zip_path, big_raster=big)
    where = f"\nreport: {json.dumps({k: v for k, v in report.items() if k != 'log'}, indent=1)}" \
            f"\nQGIS output:\n{report['log']}"
    assert report["exit"] == 0 and report["returncode"] == 0, where
    assert "fctl_qgis" in report["plugins"], where
    assert "/profiles/default/python/plugins/fctl_qgis/" in report["plugin_file"], where
    assert report["dock_visible"] and report["started"], where
    # the engine (torch) loaded in a background task after the dock opened; devices named then
    assert report["device_label"].startswith("Auto ("), where
    assert report["legend"][4] == "4  water", where
    assert report["ok"] and report["engine"]["size"] == [300, 300], where
    assert report["group"] == ["aerial scene polygons", "aerial scene classes"], where
    assert report["renderers"] == ["categorizedSymbol", "paletted"], where
    assert "Done in" in report["status"], where
    # unloading the plugin (Plugin Manager) during a run: the run is cancelled and waited for,
    # no "wrapped C/C++ object has been deleted", no file left behind
    u = report["unload"]
    assert u["started"] and u["was_running"] and u["unloaded"], where
    assert report["exceptions"] == [], where
    assert u["leftover"] == [], where

    shot = tmp_path / "screenshot.png"
    assert report["screenshot"] and shot.is_file(), where
    img = image_array(shot)
    assert img.shape[0] >= 600 and img.shape[1] >= 1000
    assert img.std() > 20, "the screenshot is blank"
    # the results drawn on the map: many pixels in the classes' exact colours
    colours = np.array([c for _, c in CLASSES if c not in ((0, 0, 0), (255, 255, 255))])
    hits = (img[:, :, None, :] == colours[None, None]).all(-1).any(-1)
    assert hits.mean() > 0.05, f"only {hits.mean():.1%} of the screenshot shows class colours"
    # the README's picture; refreshed on request so that test runs leave the tree clean
    docs_shot = ROOT / "docs" / "screenshot.png"
    if os.environ.get("FCTL_UPDATE_SCREENSHOT") or not docs_shot.exists():
        docs_shot.parent.mkdir(exist_ok=True)
        shutil.copy(shot, docs_shot)
