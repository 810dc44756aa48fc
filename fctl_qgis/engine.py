"""The one way the QGIS code reaches the engine (``model_core``).

* Installed plugin (zip): the engine ships inside the plugin's package, ``fctl_qgis/model_core``,
  and is imported as ``fctl_qgis.model_core``. A plugin reload or an upgrade through the Plugin
  Manager therefore re-imports the new engine with the plugin, and no other ``model_core`` on
  ``sys.path`` can take its place.
* Repository (development): ``model_core/`` sits next to ``fctl_qgis/`` and is imported as the
  top-level ``model_core`` (the same module objects the engine's tests and command line use).

Every import of the engine by the plugin goes through :func:`engine_module` /
:func:`engine_import`, which also hide triton right before the engine first brings torch in (see
:func:`guard_torch_import`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_BUNDLED = (Path(__file__).resolve().parent / "model_core" / "__init__.py").is_file()
ENGINE = f"{__package__}.model_core" if _BUNDLED else "model_core"


def is_bundled() -> bool:
    """True when the engine ships inside the plugin folder (the zip layout)."""
    return _BUNDLED


def _import(fullname: str) -> ModuleType:
    # builtins.__import__ (not importlib.import_module): QGIS wraps it to record the modules a
    # plugin imports, and qgis.utils.unloadPlugin/reloadPlugin drop exactly those.
    __import__(fullname)
    return sys.modules[fullname]


def guard_torch_import(fullname: str) -> ModuleType:
    """Import ``fullname`` with triton hidden, and keep triton hidden only if torch got imported.

    torchvision (imported by timm) imports torch._dynamo, which probes for triton; triton's
    bundled LLVM clashes with the LLVM that Mesa (llvmpipe) loads into the QGIS desktop and the
    import segfaults QGIS. The plugin never compiles kernels. triton is hidden only when nothing
    imported it yet, and only from the moment torch is in the process: an engine module that
    does not import torch leaves ``sys.modules`` as it found it.
    """
    from .bootstrap import hide_triton, unhide_triton

    hid = hide_triton()
    try:
        return _import(fullname)
    finally:
        if hid and "torch" not in sys.modules:
            unhide_triton()


def engine_module(name: str = "") -> ModuleType:
    """The engine's module ``name`` (dotted, relative to the engine, e.g. ``"inference"``)."""
    return guard_torch_import(f"{ENGINE}.{name}" if name else ENGINE)


def engine_import(name: str, *attributes: str) -> Any:
    """``from <engine>.<name> import a, b``: one attribute is returned as is, several as a
    tuple. Lazy attributes (``model_core.inference``'s) are resolved under the triton guard."""
    from .bootstrap import hide_triton, unhide_triton

    module = engine_module(name)
    hid = hide_triton()
    try:
        values = tuple(getattr(module, a) for a in attributes)
    finally:
        if hid and "torch" not in sys.modules:
            unhide_triton()
    return values[0] if len(values) == 1 else values


def import_torch() -> ModuleType:
    """torch, imported under the same triton guard as the engine."""
    return guard_torch_import("torch")


def unload() -> list[str]:
    """Forget the bundled engine's modules (plugin unload), so that the next load imports the
    engine's files again; returns their names. The repository's top-level engine is shared with
    the command line and the tests and is left alone."""
    if not _BUNDLED:
        return []
    names = [n for n in list(sys.modules) if n == ENGINE or n.startswith(ENGINE + ".")]
    for n in names:
        sys.modules.pop(n, None)
    return names
