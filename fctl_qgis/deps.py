"""Python dependencies of the engine inside QGIS: detect what is missing, install it with pip.

QGIS's Python often lacks torch and timm. The plugin still loads; the Processing provider then
offers no algorithm and the dock lists what is missing with an "Install" button. The installer runs
pip *in-process* (``sys.executable`` inside QGIS is the QGIS binary, not a Python) with
``--target`` pointing at a plugin-owned folder that :mod:`.bootstrap` puts on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .bootstrap import deps_dir

log = logging.getLogger(__name__)

# Import name -> pinned requirement (kept equal to the repository's requirements.txt; a test checks).
REQUIRED = {
    "torch": "torch==2.14.1",
    "torchvision": "torchvision==0.29.1",
    "timm": "timm==1.0.31",
    "safetensors": "safetensors==0.8.0",
}
# Debian's GDAL bindings are built against numpy 1.x: never let pip pull numpy 2 next to them.
CONSTRAINTS = ["numpy<2"]


@dataclass
class DependencyStatus:
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def message(self) -> str:
        if self.ok:
            return "All dependencies are available."
        return ("FCtL needs the Python package(s) " + ", ".join(self.missing) + ", missing from "
                "QGIS's Python. Click 'Install dependencies' to install "
                + ", ".join(REQUIRED[m] for m in self.missing) + f" into {deps_dir()} with pip "
                "(about 1-6 GB to download), then restart QGIS.")


def find_spec(name: str):
    """Module lookup, a seam for tests that simulate missing packages."""
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def check(names: Sequence[str] | None = None) -> DependencyStatus:
    """Which required packages cannot be imported (nothing is imported)."""
    names = list(REQUIRED) if names is None else list(names)
    return DependencyStatus([n for n in names if find_spec(n) is None])


def pip_arguments(requirements: Sequence[str], target: str | Path,
                  extra: Sequence[str] = ()) -> list[str]:
    """pip's argument list for installing ``requirements`` into ``target``."""
    # wheels only: building an sdist would make pip launch sys.executable (QGIS itself)
    return ["install", "--target", str(target), "--upgrade", "--no-input", "--only-binary",
            ":all:", "--disable-pip-version-check", "--no-warn-script-location", "--progress-bar",
            "off", *extra, *requirements]


def install(requirements: Sequence[str] | None = None, target: str | Path | None = None,
            extra: Sequence[str] = (), log_fn: Callable[[str], None] | None = None) -> int:
    """Install ``requirements`` (default: the missing pins) into ``target`` with pip in-process.

    Returns pip's exit status; its output goes to ``log_fn`` line by line. The target folder is
    added to ``sys.path`` on success so a restart is needed only for packages already imported.
    """
    if find_spec("pip") is None:
        raise RuntimeError("pip is not available in QGIS's Python; install it with your system's "
                           "package manager (e.g. apt install python3-pip) or install "
                           + ", ".join(REQUIRED.values()) + " yourself")
    if requirements is None:
        requirements = [REQUIRED[m] for m in check().missing]
    if not requirements:
        return 0
    target = Path(target) if target is not None else deps_dir()
    target.mkdir(parents=True, exist_ok=True)
    args = pip_arguments(list(requirements) + list(_constraints_for(requirements)), target,
                         extra)
    log.info("pip %s", " ".join(args))
    from pip._internal.cli.main import main as pip_main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            rc = int(pip_main(args) or 0)
        except SystemExit as exc:  # pip may exit on bad arguments
            rc = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    for line in out.getvalue().splitlines():
        if log_fn is not None:
            log_fn(line)
        log.info("pip: %s", line)
    if rc == 0 and str(target) not in sys.path:
        sys.path.append(str(target))
        importlib.invalidate_caches()
    return rc


def _constraints_for(requirements: Sequence[str]) -> list[str]:
    """numpy<2 joins any install that may pull numpy (torch does); a plain list otherwise."""
    heavy = {"torch", "torchvision", "timm"}
    names = {r.split("=")[0].split("<")[0].split(">")[0].strip().lower() for r in requirements}
    return CONSTRAINTS if names & heavy else []
