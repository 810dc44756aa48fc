"""The engine ships inside the plugin's package: in the zip it is ``fctl_qgis.model_core``, a
plugin reload (qgis.utils.reloadPlugin, as the Plugin Manager and Plugin Reloader do) runs the
changed engine files, and the engine itself imports nothing by the top-level name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from plugin_fixtures import make_tiny_model, site_packages

sys.path.insert(0, str(ROOT / "tools"))
import package  # noqa: E402

RELOAD_SCRIPT = r"""
import sys
from pathlib import Path
from qgis.core import QgsApplication
app = QgsApplication([], False)
app.initQgis()
import qgis.utils as qu

class Iface:                      # what FCtLPlugin.initGui/unload call on QGIS's iface
    def mainWindow(self):
        return None
    def __getattr__(self, name):
        return lambda *a, **k: None

plugins, probe = Path(sys.argv[1]), Path(sys.argv[2])
qu.iface = Iface()
qu.plugin_paths = [str(plugins)]
sys.path.insert(0, str(plugins))  # QGIS puts each plugin path on sys.path
qu.updateAvailablePlugins()
assert "fctl_qgis" in qu.available_plugins, qu.available_plugins
assert qu.loadPlugin("fctl_qgis") and qu.startPlugin("fctl_qgis")
engine = sys.modules["fctl_qgis.engine"]
print("engine", engine.ENGINE)
print("first", engine.engine_import("ground", "FCTL_RELOAD_PROBE"))
probe.write_text(probe.read_text().replace("FCTL_RELOAD_PROBE = 1", "FCTL_RELOAD_PROBE = 2"))
assert qu.reloadPlugin("fctl_qgis")
engine = sys.modules["fctl_qgis.engine"]
print("reloaded", engine.engine_import("ground", "FCTL_RELOAD_PROBE"))
print("file", sys.modules["fctl_qgis.model_core.ground"].__file__)
print("toplevel", "model_core" in sys.modules)
qu.unloadPlugin("fctl_qgis")
print("left", sorted(m for m in sys.modules if m.startswith("fctl_qgis.model_core")))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The plugin as `make package` ships it, unpacked into a plugins folder."""
    tmp = tmp_path_factory.mktemp("plugin")
    model = make_tiny_model(tmp / "tiny.safetensors")
    zip_path = package.build(tmp / "fctl_qgis.zip", default_model=model)
    plugins = tmp / "plugins"
    zipfile.ZipFile(zip_path).extractall(plugins)
    return plugins


def test_reload_runs_the_changed_engine(installed, tmp_path):
    probe = installed / "fctl_qgis" / "model_core" / "ground.py"
    probe.write_text(probe.read_text() + "\nFCTL_RELOAD_PROBE = 1\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1",
               HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "xdg"), HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([site_packages(), "/usr/share/qgis/python/plugins"]))
    env.pop("QGIS_PLUGINPATH", None)
    proc = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, str(installed), str(probe)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    assert out["engine"] == "fctl_qgis.model_core"
    assert out["first"] == "1"
    assert out["reloaded"] == "2"                        # the new engine code runs
    assert Path(out["file"]).is_relative_to(installed / "fctl_qgis" / "model_core")
    assert out["toplevel"] == "False"                    # no top-level model_core involved
    assert out["left"] == "[]"                           # unloading forgets the engine


def test_engine_imports_itself_relatively():
    """Every engine import is relative, so the same files work as ``model_core`` (repository)
    and as ``fctl_qgis.model_core`` (zip)."""
    absolute = re.compile(r"^\s*(from|import)\s+model_core\b|import_module\(\s*[\"']model_core",
                          re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "model_core").rglob("*.py")
                 if absolute.search(p.read_text())]
    assert offenders == []


def test_plugin_reaches_the_engine_only_through_engine_py():
    absolute = re.compile(r"^\s*(from|import)\s+model_core\b", re.M)
    offenders = [p.name for p in (ROOT / "fctl_qgis").glob("*.py")
                 if absolute.search(p.read_text())]
    assert offenders == []
    from fctl_qgis import engine

    assert engine.ENGINE == "model_core" and not engine.is_bundled()   # repository layout
    assert engine.unload() == []       # the shared top-level engine is never dropped
