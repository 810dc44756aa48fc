"""The plugin object QGIS loads: registers the Processing provider and the dock."""

from __future__ import annotations

import logging

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon

from . import log as message_log
from .i18n import install_translator, remove_translator, tr
from .provider import PROVIDER_ID, FCtLProvider, icon_path
from .qtcompat import QAction

log = logging.getLogger(__name__)

MENU = "&FCtL segmentation"   # translated when used (tr() needs the application)


class FCtLPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: FCtLProvider | None = None
        self.dock = None
        self.action: QAction | None = None
        # engine and plugin messages go to the Log Messages panel while the plugin is loaded
        message_log.install()
        install_translator()   # before any tr(): a shipped .qm for QGIS's locale, if any

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
            log.warning("could not register the FCtL Processing provider: another plugin "
                        "may use the id %r; disable it and reload FCtL", PROVIDER_ID)
            self.provider = None

    # ------------------------------------------------------------------ GUI
    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        self.action = QAction(QIcon(icon_path()), tr("FCtL segmentation"),
                              self.iface.mainWindow())
        self.action.setObjectName("FCtLShowDock")
        self.action.setCheckable(True)
        self.action.toggled.connect(self.show_dock)
        self.iface.addPluginToRasterMenu(tr(MENU), self.action)
        self.iface.addRasterToolBarIcon(self.action)

    def show_dock(self, visible: bool = True) -> None:
        if visible and self.dock is None:
            from .dock import FCtLDock

            self.dock = FCtLDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
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
        """Undo initGui/initProcessing. A run in progress is cancelled and waited for (the dock
        detaches from its task first), so that no signal reaches the deleted dock and the engine
        removes its partial files before the plugin's modules go away."""
        if self.dock is not None:
            dock, self.dock = self.dock, None
            try:
                dock.visibilityChanged.disconnect(self._dock_visibility)
            except (TypeError, RuntimeError):   # never connected, or already deleted
                pass
            dock.unload()
            self.iface.removeDockWidget(dock)
            dock.deleteLater()
        if self.action is not None:
            self.iface.removePluginRasterMenu(tr(MENU), self.action)
            self.iface.removeRasterToolBarIcon(self.action)
            self.action.deleteLater()
            self.action = None
        registry = QgsApplication.processingRegistry()
        if self.provider is not None and registry.providerById(PROVIDER_ID) is self.provider:
            registry.removeProvider(self.provider)
        self.provider = None
        message_log.uninstall()
        remove_translator()
        # the bundled engine is re-imported from the plugin's files on the next load
        from . import engine
        engine.unload()
