"""The plugin object QGIS loads: registers the Processing provider and the dock."""

from __future__ import annotations

import logging

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .provider import PROVIDER_ID, FCtLProvider, icon_path

log = logging.getLogger(__name__)

MENU = "&FCtL segmentation"


class FCtLPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: FCtLProvider | None = None
        self.dock = None
        self.action: QAction | None = None

    # ------------------------------------------------------------------ Processing
    def initProcessing(self) -> None:  # noqa: N802 - QGIS's name
        registry = QgsApplication.processingRegistry()
        existing = registry.providerById(PROVIDER_ID)
        if existing is not None:
            # Registered already (initProcessing called twice, or another instance): adding it
            # again would fail and make QGIS delete our Python object.
            if self.provider is None and isinstance(existing, FCtLProvider):
                self.provider = existing
            return
        self.provider = FCtLProvider()
        if not registry.addProvider(self.provider):
            log.warning("could not register the FCtL Processing provider")
            self.provider = None

    # ------------------------------------------------------------------ GUI
    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self.action = QAction(QIcon(icon_path()), "FCtL segmentation", self.iface.mainWindow())
        self.action.setObjectName("FCtLShowDock")
        self.action.setCheckable(True)
        self.action.toggled.connect(self.show_dock)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.iface.addRasterToolBarIcon(self.action)

    def show_dock(self, visible: bool = True) -> None:
        if visible and self.dock is None:
            from .dock import FCtLDock

            self.dock = FCtLDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.visibilityChanged.connect(self._dock_visibility)
        if self.dock is not None:
            self.dock.setVisible(visible)
        if self.action is not None and self.action.isChecked() != visible:
            self.action.setChecked(visible)

    def _dock_visibility(self, visible: bool) -> None:
        if self.action is not None and self.action.isChecked() != visible:
            self.action.blockSignals(True)
            self.action.setChecked(visible)
            self.action.blockSignals(False)

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.unload()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeRasterToolBarIcon(self.action)
            self.action = None
        registry = QgsApplication.processingRegistry()
        if self.provider is not None and registry.providerById(PROVIDER_ID) is self.provider:
            registry.removeProvider(self.provider)
        self.provider = None
