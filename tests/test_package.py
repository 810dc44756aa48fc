"""`make package` / `make deploy`: the zip's layout and qgis-plugin-ci-style checks, the
installed plugin importing its bundled engine (as ``fctl_qgis.model_core``), the licence, and
deployment into a profile."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from plugin_fixtures import make_tiny_model, site_packages

sys.path.insert(0, str(ROOT / "tools"))
import package  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pkg")
    model = make_tiny_model(tmp / "tiny.safetensors")
    return package.build(tmp / "dist" / "fctl_qgis.zip", default_model=model)


def test_zip_layout_and_checks(built):
    assert package.check_zip(built) == []
    names = set(zipfile.ZipFile(built).namelist())
    for required in ("fctl_qgis/__init__.py", "fctl_qgis/metadata.txt",
                     "fctl_qgis/plugin.py", "fctl_qgis/algorithm.py",
                     "fctl_qgis/model_core/__init__.py", "fctl_qgis/model_core/checkpoint.py",
                     "fctl_qgis/resources/icons/fctl.svg",
                     "fctl_qgis/resources/models/default.safetensors",
                     "fctl_qgis/resources/models/README.md", "fctl_qgis/LICENSE"):
        assert required in names
    assert not [n for n in names if n.endswith((".pyc", ".so")) or "__pycache__" in n
                or "/tests/" in n or "/resources/sample" in n]
    meta = zipfile.ZipFile(built).read("fctl_qgis/metadata.txt")
    assert meta == (ROOT / "fctl_qgis" / "metadata.txt").read_bytes()
    assert zipfile.ZipFile(built).read("fctl_qgis/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert built.stat().st_size <= package.MAX_ZIP_BYTES
    assert not (built.parent / "fctl_qgis.zip.part").exists()


def test_check_zip_finds_problems(tmp_path, built):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(built) as src, zipfile.ZipFile(bad, "w") as dst:
        for n in src.namelist():
            if n != "fctl_qgis/resources/models/default.safetensors":
                dst.writestr(n, src.read(n) if n != "fctl_qgis/metadata.txt" else
                             src.read(n).decode().replace("email=", "mail=").encode())
        dst.writestr("fctl_qgis/__pycache__/plugin.cpython-311.pyc", b"\0")
        dst.writestr("fctl_qgis/tests/test_x.py", "x = 1\n")
        dst.writestr("other/readme.txt", "x")
        dst.writestr("fctl_qgis/stray.py", "from model_core.checkpoint import read_card\n")
    problems = "\n".join(package.check_zip(bad))
    assert "one top folder" in problems and "compiled, hidden or test files" in problems
    assert "['email']" in problems and "default model is missing" in problems
    assert "top-level model_core" in problems and "fctl_qgis/stray.py" in problems


def test_missing_default_model_fails_clearly(tmp_path, capsys):
    rc = package.main(["--out", str(tmp_path / "x.zip"), "--default-model",
                       str(tmp_path / "none.safetensors")])
    assert rc == 1
    assert "default model" in capsys.readouterr().err
    assert not (tmp_path / "x.zip").exists()


def test_installed_plugin_imports_its_bundled_engine(tmp_path, built):
    """In the zip layout the engine and the default model live inside the plugin folder and the
    engine is ``fctl_qgis.model_core``: another top-level ``model_core`` on the path (here a decoy
    that fails on import) is never used, and the plugin folder is not put on sys.path."""
    plugins = tmp_path / "plugins"
    zipfile.ZipFile(built).extractall(plugins)
    decoy = tmp_path / "decoy" / "model_core"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the decoy model_core was imported')\n")
    code = ("import fctl_qgis, sys; from fctl_qgis import engine\n"
            "DEFAULT_MODEL, read_card = engine.engine_import('checkpoint', 'DEFAULT_MODEL', "
            "'read_card')\n"
            "print(engine.ENGINE); print(sys.modules['fctl_qgis.model_core'].__file__)\n"
            "print(DEFAULT_MODEL.is_file()); print(read_card(DEFAULT_MODEL).name)\n"
            "assert 'model_core' not in sys.modules\n"
            "assert str(fctl_qgis.bootstrap.PLUGIN_DIR) not in sys.path\n")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(
        [str(decoy.parent), str(plugins), site_packages()]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    name, path, exists, card = proc.stdout.split("\n")[:4]
    assert name == "fctl_qgis.model_core"
    assert Path(path).is_relative_to(plugins / "fctl_qgis" / "model_core")
    assert exists == "True" and card == "tiny test model"


def test_metadata_and_licence_are_real_files():
    """A symlinked metadata.txt breaks Windows checkouts; the licence is GPL-2.0-or-later."""
    meta = ROOT / "fctl_qgis" / "metadata.txt"
    assert meta.is_file() and not meta.is_symlink()
    assert not (ROOT / "metadata.txt").exists()    # one metadata.txt, the plugin's
    assert "GPL-2.0-or-later" in meta.read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()
    assert "Version 2" in (ROOT / "LICENSE").read_text()
    assert "GPL-2.0-or-later" in (ROOT / "README.md").read_text()
    assert "Licence of the weights" in (ROOT / "resources" / "models" / "README.md").read_text()


def test_deploy_installs_and_enables(tmp_path, built):
    profiles = tmp_path / "profiles"
    ini = profiles / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[General]\nlocale=en\n\n[PythonPlugins]\nother=true\nfctl_qgis=false\n")
    stale = profiles / "default" / "python" / "plugins" / "fctl_qgis" / "stale.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("old\n")
    assert package.main(["--deploy", str(built), "--profiles-path", str(profiles)]) == 0
    target = profiles / "default" / "python" / "plugins" / "fctl_qgis"
    assert (target / "metadata.txt").is_file() and not stale.exists()
    text = ini.read_text()
    assert "fctl_qgis=true" in text and "fctl_qgis=false" not in text
    assert "other=true" in text and "locale=en" in text
    package.enable(tmp_path / "new" / "QGIS3.ini")
    assert (tmp_path / "new" / "QGIS3.ini").read_text() == "[PythonPlugins]\nfctl_qgis=true\n"
