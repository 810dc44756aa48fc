"""The few Qt names that moved between Qt 5 (QGIS 3) and Qt 6 (QGIS 4), imported in one place.

Everything else goes through ``qgis.PyQt`` with scoped enums (``Qt.MouseButton.LeftButton``) and
``exec()``, which both PyQt5 and PyQt6 accept (tests/test_qgis_conventions.py checks it).
"""

from __future__ import annotations

try:   # Qt 6: QAction lives in QtGui
    from qgis.PyQt.QtGui import QAction
except ImportError:   # Qt 5: in QtWidgets
    from qgis.PyQt.QtWidgets import QAction

__all__ = ["QAction"]
