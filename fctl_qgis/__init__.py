"""FCtL for QGIS: segment ultra-high-resolution aerial imagery with the FCtL model.

QGIS calls :func:`classFactory`. Nothing here imports torch: the plugin loads without its heavy
dependencies and tells the user what is missing (see :mod:`.deps`). The engine is reached through
:mod:`.engine` only.
"""

from __future__ import annotations

from .bootstrap import setup_paths

setup_paths()


def classFactory(iface):  # noqa: N802 - QGIS's name
    from .plugin import FCtLPlugin

    return FCtLPlugin(iface)
