"""Translation of the plugin's user-visible strings (one Qt context for the whole plugin)."""

from __future__ import annotations

from qgis.PyQt.QtCore import QCoreApplication

CONTEXT = "FCtL"


def tr(text: str) -> str:
    return QCoreApplication.translate(CONTEXT, text)
