"""The dependency installer: what was installed is what runs (the dependency folder first on the
path), QGIS's Python found from its prefix on each platform, the PyTorch build chosen from the
NVIDIA driver, the exact pip command, a real install of a local wheel by a pip subprocess, the
version check, cancelling, and the Processing provider refreshed without a restart."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from fctl_qgis import bootstrap, deps, platform_env
from fctl_qgis.platform_env import InstallerError, TorchBuild, choose_torch_build, find_python


# ------------------------------------------------------------------ shadowing
def _probe_package(folder: Path, version: int) -> None:
    pkg = folder / "fctl_shadow_probe"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"VERSION = {version}\n")


def test_installed_version_wins_over_an_older_system_copy(tmp_path):
    """The sympy bug: Debian's sympy 1.11 (QGIS's Python) shadowed the sympy 1.14 that pip put
    in the dependency folder for torch, because the folder was appended to sys.path."""
    system, dep_dir = tmp_path / "dist-packages", tmp_path / "fctl_deps"
    _probe_package(system, 1)            # the older copy QGIS's Python already has
    _probe_package(dep_dir, 2)           # what the installer put in the plugin's folder
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(system)]),
               FCTL_DEPS_DIR=str(dep_dir), PYTHONDONTWRITEBYTECODE="1")

    def run(code: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    before = run(f"import sys; sys.path.append({str(dep_dir)!r}); "
                 "import fctl_shadow_probe as p; print(p.VERSION)")
    assert before.stdout.strip() == "1", before.stderr      # appended: the old copy won
    after = run("import fctl_qgis, fctl_shadow_probe as p; print(p.VERSION)")
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "2"                        # bootstrap: the installed one


# ------------------------------------------------------------------ QGIS's Python
def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_interpreter_found_from_the_prefix_on_each_layout(tmp_path):
    linux = _exe(tmp_path / "usr" / "bin" / "python3.11")
    assert find_python(tmp_path / "usr", "Linux", (3, 11)) == linux
    # Windows OSGeo4W / standalone: QGIS's exec_prefix is apps/Python39, or the install root
    win = _exe(tmp_path / "OSGeo4W" / "apps" / "Python39" / "python.exe")
    assert find_python(tmp_path / "OSGeo4W" / "apps" / "Python39", "Windows", (3, 9)) == win
    assert find_python(tmp_path / "OSGeo4W", "Windows", (3, 9)) == win
    # macOS: QGIS.app/Contents/MacOS/bin/python3, with the prefix under Contents/Frameworks
    mac = _exe(tmp_path / "QGIS.app" / "Contents" / "MacOS" / "bin" / "python3")
    prefix = tmp_path / "QGIS.app" / "Contents" / "Frameworks"
    prefix.mkdir()
    assert find_python(prefix, "Darwin", (3, 9)) == mac
    with pytest.raises(InstallerError, match="not found.*python -m pip install"):
        find_python(tmp_path / "nothing", "Linux", (3, 11))


def test_interpreter_here_comes_from_exec_prefix_not_sys_executable():
    python = find_python()
    assert python.parent == Path(sys.exec_prefix) / "bin"
    info = platform_env.probe_python(python)
    assert tuple(info["version"]) == sys.version_info[:2] and info["pip"] is True


# ------------------------------------------------------------------ the torch build
@pytest.mark.parametrize("driver, system, tag, note", [
    ("580.82.07", "Linux", "cu130", ""),
    ("575.51.03", "Linux", "cu128", ""),
    ("560.35.03", "Linux", "cu126", ""),
    ("550.54", "Linux", "cu126", "minor-version compatibility"),
    ("551.61", "Windows", "cu126", "minor-version compatibility"),
    ("470.82.01", "Linux", "cpu", "too old"),
    ("470.x", "Linux", "cpu", "too old"),
    (None, "Linux", "cpu", ""),
    (None, "Windows", "cpu", ""),
    ("550.54", "Darwin", "cpu", "macOS"),
])
def test_torch_build_from_the_driver(driver, system, tag, note):
    build = choose_torch_build(driver, "NVIDIA RTX A2000", system)
    assert build.tag == tag
    assert build.index_url == f"https://download.pytorch.org/whl/{tag}"
    assert note in build.note
    assert build.device == ("NVIDIA RTX A2000" if tag != "cpu" else "CPU")
    assert build.download_gb == (3.0 if tag != "cpu" else 0.3)


def test_nvidia_smi_output_is_read(monkeypatch):
    monkeypatch.setattr(platform_env.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "550.54.15, NVIDIA GeForce RTX 3060\n"
                                                   "550.54.15, NVIDIA GeForce RTX 3060\n", "")

    assert platform_env.query_gpu(run) == ("550.54.15", "NVIDIA GeForce RTX 3060")
    assert calls[0] == ["/usr/bin/nvidia-smi", "--query-gpu=driver_version,name",
                        "--format=csv,noheader"]
    failing = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 9, "", "no devices")  # noqa: E731
    assert platform_env.query_gpu(failing) is None
    monkeypatch.setattr(platform_env.shutil, "which", lambda name: None)
    assert platform_env.query_gpu(run) is None


# ------------------------------------------------------------------ plan and command
def test_exact_pip_command_and_what_the_dock_shows(tmp_path):
    build = choose_torch_build("560.35.03", "NVIDIA RTX A2000", "Linux")
    plan = deps.InstallPlan(Path("/opt/qgis/bin/python3.11"), dict(deps.REQUIRED),
                            tmp_path / "fctl_deps", build, "1.24.2")
    assert deps.pip_command(plan, "/tmp/c.txt") == [
        "/opt/qgis/bin/python3.11", "-m", "pip", "install",
        "--target", str(tmp_path / "fctl_deps"), "--upgrade", "--no-input", "--only-binary", ":all:", "--disable-pip-version-check",
        "--no-warn-script-location", "--progress-bar", "off", "--constraint", "/tmp/c.txt",
        "--extra-index-url", "https://download.pytorch.org/whl/cu126",
        "torch==2.14.1", "torchvision==0.29.1", "timm==1.0.31", "safetensors==0.8.0"]
    text = plan.describe()
    assert "/opt/qgis/bin/python3.11" in text and "torch==2.14.1" in text
    assert "CUDA 12.6" in text and "NVIDIA RTX A2000" in text and str(tmp_path) in text
    assert plan.keeps_system_numpy
    cpu = deps.InstallPlan(plan.python, plan.requirements, plan.target,
                           choose_torch_build(None, "", "Linux"), None)
    assert "the CPU" in cpu.describe() and not cpu.keeps_system_numpy
    assert "https://download.pytorch.org/whl/cpu" in deps.pip_command(cpu, "c.txt")


def test_missing_dependencies_message_names_build_and_device(monkeypatch):
    monkeypatch.setitem(deps._CACHE, "build", TorchBuild("cu128", "CUDA 12.8", "NVIDIA L4",
                                                         "NVIDIA driver 570.86"))
    real = deps.find_spec
    monkeypatch.setattr(deps, "find_spec",
                        lambda n: None if n in ("torch", "timm") else real(n))
    text = deps.check().message()
    assert "torch, timm" in text and "torch==2.14.1" in text and "timm==1.0.31" in text
    assert "CUDA 12.8" in text and "NVIDIA L4" in text and str(find_python()) in text


def test_numpy_is_left_to_qgis(tmp_path):
    for p in ("numpy/core", "numpy-1.26.4.dist-info", "numpy.libs", "bin", "torch"):
        (tmp_path / p).mkdir(parents=True)
    (tmp_path / "bin" / "f2py").write_text("#!python\n")
    deps._drop_numpy(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "torch"]
    assert deps.CONSTRAINTS == ["numpy<2"]


# ------------------------------------------------------------------ a real install
def _tiny_wheel(folder: Path, version: str = "1.0") -> Path:
    """A minimal pure-Python wheel, written by hand (no network, no build backend)."""
    name = "fctl_tinydep"
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    whl = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return whl


def test_install_a_local_wheel_with_qgis_python(tmp_path, monkeypatch):
    wheels, target = tmp_path / "wheels", tmp_path / "fctl_deps"
    wheels.mkdir()
    _tiny_wheel(wheels)
    launched = []
    real_popen = subprocess.Popen

    class Popen(real_popen):
        def __init__(self, args, *a, **k):
            launched.append(list(args))
            super().__init__(args, *a, **k)

    monkeypatch.setattr(subprocess, "Popen", Popen)
    monkeypatch.setattr(sys, "path", list(sys.path))
    root_handlers = list(logging.getLogger().handlers)
    plan = deps.make_plan(["fctl_tinydep==1.0"], target)
    assert plan.build is None                           # no torch: no PyTorch index
    lines: list[str] = []
    rc = deps.install(plan=plan, extra=["--no-index", "--find-links", str(wheels)],
                      log_fn=lines.append)
    assert rc == 0, "\n".join(lines)
    pip = [c for c in launched if c[1:4] == ["-m", "pip", "install"]]
    assert pip and pip[0][0] == str(find_python()) != sys.executable
    assert (target / "fctl_tinydep" / "__init__.py").is_file()
    assert sys.path[0] == str(target)                   # importable now, without a restart
    assert deps.summary_lines(lines)[0] == "Installed: fctl_tinydep 1.0"
    assert logging.getLogger().handlers == root_handlers   # pip's logging stayed in pip
    import fctl_tinydep
    assert fctl_tinydep.VALUE == 42 and fctl_tinydep.__file__.startswith(str(target))
    sys.modules.pop("fctl_tinydep", None)
    # the version check names a version that is not the pinned one
    wrong = deps.InstallPlan(plan.python, {"fctl_tinydep": "fctl_tinydep==2.0"}, target)
    report = deps.verify(wrong)
    assert not report.ok and "1.0 was found instead of 2.0" in report.problems[0]


def test_failed_install_is_reported(tmp_path):
    lines: list[str] = []
    rc = deps.install(["fctl_not_there==1.0"], tmp_path / "t",
                      extra=["--no-index", "--find-links", str(tmp_path)], log_fn=lines.append)
    assert rc != 0
    assert any("fctl_not_there" in line for line in lines)


def test_cancel_stops_the_process():
    started: list[str] = []
    cmd = [str(find_python()), "-u", "-c", "print('started'); import time; time.sleep(120)"]
    t0 = time.monotonic()
    with pytest.raises(deps.Cancelled, match="cancelled"):
        deps.run_process(cmd, started.append, should_cancel=lambda: bool(started))
    assert started == ["started"] and time.monotonic() - t0 < 30


# ------------------------------------------------------------------ Processing refresh
def test_algorithm_appears_after_install_without_restart(qgis_iface, monkeypatch):
    from qgis.core import QgsApplication

    from fctl_qgis.plugin import FCtLPlugin

    registry = QgsApplication.processingRegistry()
    real = deps.find_spec
    monkeypatch.setattr(deps, "find_spec", lambda n: None if n == "timm" else real(n))
    plugin = FCtLPlugin(qgis_iface)
    plugin.initProcessing()
    try:
        assert registry.algorithmById("fctl:segment") is None     # timm "missing"
        monkeypatch.setattr(deps, "find_spec", real)               # "installed"
        assert deps.refresh_processing() is True
        assert registry.algorithmById("fctl:segment") is not None
    finally:
        plugin.unload()
