"""What the dependency installer needs to know about this machine: QGIS's own Python interpreter
(to run pip as a subprocess of it) and the PyTorch build that uses this machine's GPU.

Inside QGIS ``sys.executable`` is the QGIS program, not a Python: the interpreter is found from
``sys.exec_prefix`` and the platform's layout instead. PyPI's torch is CPU-only on Windows and a
multi-GB CUDA build on Linux, so the build is chosen from the NVIDIA driver (``nvidia-smi``) and
taken from PyTorch's own wheel index.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .i18n import tr

log = logging.getLogger(__name__)

TORCH_INDEX = "https://download.pytorch.org/whl/{tag}"
# CUDA builds of the pinned torch (2.14.1), newest first, with the minimum NVIDIA driver of each
# CUDA release on Linux and on Windows (NVIDIA's CUDA toolkit release notes, table 3).
CUDA_BUILDS: tuple[tuple[str, str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("cu130", "CUDA 13.0", (580, 65, 6), (580, 88)),
    ("cu128", "CUDA 12.8", (570, 26), (570, 65)),
    ("cu126", "CUDA 12.6", (560, 28, 3), (560, 76)),
)
# CUDA 12 minor-version compatibility: a cu12x build runs on any CUDA 12 driver from these on.
CUDA12_MINIMUM = ((525, 60, 13), (528, 33))
# Rough download sizes (GB) of torch + torchvision + timm + their dependencies.
DOWNLOAD_GB = {"cuda": 3.0, "cpu": 0.3}


class InstallerError(RuntimeError):
    """The dependency installer cannot go on; the message says what to do instead."""


@dataclass(frozen=True)
class TorchBuild:
    tag: str              # "cu126", "cpu"...
    label: str            # "CUDA 12.6", "CPU"
    device: str           # what will run the network: a GPU's name, or "CPU"
    note: str = ""        # why this build (e.g. a driver too old for CUDA)

    @property
    def cuda(self) -> bool:
        return self.tag.startswith("cu")

    @property
    def index_url(self) -> str:
        return TORCH_INDEX.format(tag=self.tag)

    @property
    def download_gb(self) -> float:
        return DOWNLOAD_GB["cuda" if self.cuda else "cpu"]


def parse_version(text: str) -> tuple[int, ...] | None:
    """'550.54.15' -> (550, 54, 15); None when ``text`` holds no version."""
    parts = []
    for piece in text.strip().split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits or digits != piece.strip():
            break
        parts.append(int(digits))
    return tuple(parts) if parts else None


def _nvidia_smi() -> str | None:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    if os.name == "nt":
        for base in (os.environ.get("ProgramFiles", r"C:\Program Files"),
                     os.environ.get("SystemRoot", r"C:\Windows")):
            for sub in (r"NVIDIA Corporation\NVSMI\nvidia-smi.exe", r"System32\nvidia-smi.exe"):
                path = Path(base) / sub
                if path.is_file():
                    return str(path)
    return None


def query_gpu(run: Callable[..., subprocess.CompletedProcess] = subprocess.run
              ) -> tuple[str, str] | None:
    """(driver version, GPU name) of the first NVIDIA GPU, or None (no driver, no GPU)."""
    exe = _nvidia_smi()
    if exe is None:
        return None
    try:
        proc = run([exe, "--query-gpu=driver_version,name", "--format=csv,noheader"],
                   capture_output=True, text=True, timeout=20, **no_window())
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("nvidia-smi did not answer (%s): no CUDA build", exc)
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    first = proc.stdout.strip().splitlines()[0]
    driver, _, name = first.partition(",")
    return driver.strip(), name.strip()


def choose_torch_build(driver: str | None, gpu_name: str = "",
                       system: str | None = None) -> TorchBuild:
    """The PyTorch build for an NVIDIA driver version (``nvidia-smi``'s text), or the CPU build."""
    system = system or platform.system()
    gpu = gpu_name or "NVIDIA GPU"
    if system == "Darwin":
        return TorchBuild("cpu", "CPU", "CPU", tr("macOS: PyTorch has no CUDA build"))
    version = parse_version(driver) if driver else None
    if version is None:
        note = "" if not driver else tr("unreadable NVIDIA driver version {v!r}").format(v=driver)
        return TorchBuild("cpu", "CPU", "CPU", note)
    col = 3 if system == "Windows" else 2
    for build in CUDA_BUILDS:
        if version >= build[col]:
            return TorchBuild(build[0], build[1], gpu,
                              tr("NVIDIA driver {driver}").format(driver=driver))
    compat = CUDA12_MINIMUM[1 if system == "Windows" else 0]
    oldest = CUDA_BUILDS[-1]
    if version >= compat:
        minimum = ".".join(map(str, oldest[col]))
        return TorchBuild(oldest[0], oldest[1], gpu,
                          tr("NVIDIA driver {driver}, through CUDA's minor-version "
                             "compatibility (a driver >= {minimum} is recommended)").format(
                              driver=driver, minimum=minimum))
    minimum = ".".join(map(str, compat))
    return TorchBuild("cpu", "CPU", "CPU",
                      tr("the NVIDIA driver {driver} of {gpu} is too old for PyTorch's CUDA "
                         "builds: update it to {minimum} or newer to use the GPU").format(
                          driver=driver, gpu=gpu, minimum=minimum))


def detect_torch_build() -> TorchBuild:
    gpu = query_gpu()
    return choose_torch_build(gpu[0] if gpu else None, gpu[1] if gpu else "")


# ------------------------------------------------------------------ QGIS's Python
def python_candidates(exec_prefix: str | Path | None = None, system: str | None = None,
                      version: Sequence[int] | None = None) -> list[Path]:
    """Where QGIS's Python interpreter may be, most likely first, for the platform's layout:
    ``<prefix>/bin/python3.X`` (Linux, conda, Flatpak), ``<prefix>/python.exe`` and
    ``<root>/apps/Python3X/python.exe`` (Windows OSGeo4W and standalone installers),
    ``QGIS.app/Contents/MacOS/bin/python3`` (macOS)."""
    prefix = Path(exec_prefix if exec_prefix is not None else sys.exec_prefix)
    system = system or platform.system()
    major, minor = tuple(version or sys.version_info[:2])[:2]
    if system == "Windows":
        out = [prefix / "python.exe", prefix / "python3.exe"]
        for root in (prefix, prefix.parent.parent):     # <root> or <root>/apps/Python3X
            out += [root / "apps" / f"Python{major}{minor}" / "python.exe",
                    root / "bin" / "python3.exe", root / "bin" / "python.exe"]
        return out
    names = [f"python{major}.{minor}", f"python{major}", "python"]
    out = [prefix / "bin" / n for n in names]
    if system == "Darwin":
        for parent in (prefix, *prefix.parents):
            if parent.name == "Contents":
                out += [parent / "MacOS" / "bin" / n for n in names]
                break
    return out


def find_python(exec_prefix: str | Path | None = None, system: str | None = None,
                version: Sequence[int] | None = None) -> Path:
    """QGIS's Python interpreter (never ``sys.executable``, the QGIS program inside QGIS)."""
    system = system or platform.system()
    candidates = python_candidates(exec_prefix, system, version)
    for path in candidates:
        if path.is_file() and (system == "Windows" or os.access(path, os.X_OK)):
            return path
    raise InstallerError(tr(
        "QGIS's Python interpreter was not found (looked for {paths}...): install the "
        "dependencies with the Python that QGIS uses (OSGeo4W Shell on Windows: python -m pip "
        "install ...)").format(paths=", ".join(str(c) for c in candidates[:4])))


def probe_python(python: Path, timeout: float = 60) -> dict:
    """Version, pip and numpy of ``python`` (one short subprocess; nothing is imported but pip's
    and numpy's metadata)."""
    code = ("import sys, json, importlib.util as u, importlib.metadata as m\n"
            "try:\n    n = m.version('numpy')\nexcept Exception:\n    n = None\n"
            "print(json.dumps({'version': list(sys.version_info[:2]), "
            "'pip': u.find_spec('pip') is not None, 'numpy': n}))")
    try:
        proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                              timeout=timeout, env=clean_env(), **no_window())
    except (OSError, subprocess.SubprocessError) as exc:
        raise InstallerError(tr("QGIS's Python {python} does not run ({error}): install the "
                                "dependencies with it by hand (python -m pip install ...)").format(
            python=python, error=exc)) from exc
    if proc.returncode != 0:
        raise InstallerError(tr("QGIS's Python {python} fails ({error}): install the "
                                "dependencies with it by hand (python -m pip install ...)").format(
            python=python, error=proc.stderr.strip()[-500:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def clean_env(pythonpath: Sequence[str | Path] = ()) -> dict[str, str]:
    """The environment for a child Python: QGIS's, with ``PYTHONPATH`` replaced (QGIS's own
    entries would put the plugin folders and their packages before the dependency folder)."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    env["PYTHONNOUSERSITE"] = "1"   # ~/.local packages would shadow the installed ones too
    return env


def no_window() -> dict:
    """No console window flashing up for each child process on Windows."""
    if os.name == "nt":
        return {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    return {}
