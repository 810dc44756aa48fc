"""Import paths of the plugin, for both layouts it runs in.

* Repository: ``model_core/`` and ``resources/`` sit next to ``fctl_qgis/``; the repository root
  is the QGIS plugin path, so the top-level ``model_core`` is importable as it is.
* Installed zip: they sit inside the plugin folder and the engine is the subpackage
  ``fctl_qgis.model_core`` (see :mod:`.engine`). The plugin folder itself is never put on
  ``sys.path``.

The plugin-owned dependency folder (where the installer puts torch/timm with pip) goes to the
*front* of ``sys.path``: what the installer put there is what runs. Appended, an older copy in
QGIS's Python (Debian's sympy 1.11 next to the sympy 1.14 that torch needs, an old networkx or
jinja2...) would shadow it. numpy is left out of that folder when QGIS's own numpy fits (see
:mod:`.deps`), so GDAL keeps the numpy it was built against.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
DEPS_DIRNAME = "fctl_deps"


def engine_root() -> Path:
    """Folder that holds ``model_core/`` and ``resources/``."""
    return PLUGIN_DIR if (PLUGIN_DIR / "model_core").is_dir() else PLUGIN_DIR.parent


def resources_dir() -> Path:
    return engine_root() / "resources"


def deps_dir() -> Path:
    """The plugin-owned folder for pip-installed dependencies.

    ``FCTL_DEPS_DIR`` overrides it (tests); otherwise ``<QGIS profile>/python/fctl_deps``, or
    ``~/.fctl_deps`` outside QGIS.
    """
    env = os.environ.get("FCTL_DEPS_DIR")
    if env:
        return Path(env)
    try:
        from qgis.core import QgsApplication

        profile = QgsApplication.qgisSettingsDirPath()
    except Exception:  # outside QGIS
        profile = ""
    if profile:
        return Path(profile) / "python" / DEPS_DIRNAME
    return Path.home() / f".{DEPS_DIRNAME}"


def put_first(path: Path | str) -> None:
    """Put ``path`` at the front of ``sys.path`` (moving it there if it is further back)."""
    p = str(path)
    if sys.path and sys.path[0] == p:
        return
    while p in sys.path:
        sys.path.remove(p)
    sys.path.insert(0, p)
    importlib.invalidate_caches()


def hide_triton() -> bool:
    """Make ``import triton`` fail cleanly unless something imported it already; True when this
    call hid it (see :func:`.engine.guard_torch_import` for why and when)."""
    if "triton" in sys.modules:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    return True


def unhide_triton() -> None:
    """Undo :func:`hide_triton` (only the hiding entry, never a real triton)."""
    if "triton" in sys.modules and sys.modules["triton"] is None:
        del sys.modules["triton"]


def setup_paths() -> None:
    """Called when the plugin is imported: the dependency folder first on ``sys.path``."""
    deps = deps_dir()
    if deps.is_dir():
        put_first(deps)
