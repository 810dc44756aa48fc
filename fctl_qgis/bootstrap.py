"""Import paths of the plugin, for both layouts it runs in.

* Repository: ``model_core/`` and ``resources/`` sit next to ``fctl_qgis/`` (the repository root
  is the QGIS plugin path, hence already on ``sys.path``).
* Installed zip: they sit inside the plugin folder (``fctl_qgis/model_core``), so the plugin
  folder itself is appended to ``sys.path`` (appended, so the plugin's own module names never
  shadow anything else).

The plugin-owned dependency folder (where the installer puts torch/timm with pip) is appended,
so packages QGIS's Python already has keep precedence.
"""

from __future__ import annotations

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


def _add(path: Path, *, front: bool) -> None:
    p = str(path)
    if p in sys.path:
        return
    if front:
        sys.path.insert(0, p)
    else:
        sys.path.append(p)


def hide_triton() -> None:
    """Make ``import triton`` fail cleanly unless something imported it already.

    torchvision (imported by timm) imports torch._dynamo, which probes for triton; triton's
    bundled LLVM clashes with the LLVM that Mesa (llvmpipe) loads into the QGIS desktop and the
    import segfaults QGIS. The plugin never compiles kernels, so triton is not needed.
    """
    sys.modules.setdefault("triton", None)  # type: ignore[arg-type]


def setup_paths() -> None:
    hide_triton()
    root = engine_root()
    _add(root, front=False)
    deps = deps_dir()
    if deps.is_dir():
        _add(deps, front=False)
