"""What the dock needs before it can run: the Python dependencies (checked, installed with pip in
a QgsTask), the engine (torch) imported in the background once the dock is shown, the device
choices named after this machine, and the chosen model's card and legend.

:class:`DockEngineMixin` is a part of :class:`~fctl_qgis.dock.FCtLDock`: it uses the dock's
widgets and its ``_report``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qgis.core import Qgis, QgsApplication, QgsTask
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QListWidgetItem

from . import deps
from .i18n import tr
from .log import message_log
from .styling import legend_from_card
from .task import PROBED, EngineProbeTask, engine_loaded

if TYPE_CHECKING:
    from .dock import FCtLDock


class DockEngineMixin:
    """Dependencies, the background engine load, the devices and the model card."""

    # ------------------------------------------------------------------ dependencies
    def refresh_dependencies(self) -> bool:
        status = deps.check()
        self.deps_box.setVisible(not status.ok)
        self.deps_label.setText(status.message())
        for w in (self.run_button, self.click_button):
            w.setEnabled(status.ok)
        if status.ok:
            if "gpu" in PROBED:             # asked already this session: no torch call here
                self._fill_devices(PROBED["gpu"])
            self.load_model_card()
            if self._engine_requested or self.isVisible():
                self._load_engine()
        else:
            self.status.setText(status.message())
        return status.ok

    def _load_engine(self) -> None:
        """Start importing the engine (torch) and asking for the GPU in a QgsTask; the devices
        and the model's legend are filled in when it is done."""
        if self._unloaded or self.probe_task is not None or not deps.check().ok:
            return
        self._engine_requested = True
        if "gpu" in PROBED and engine_loaded():
            self._fill_devices(PROBED["gpu"])
            return
        self.probe_task = EngineProbeTask(on_done=self._engine_loaded)
        QgsApplication.taskManager().addTask(self.probe_task)

    def _engine_loaded(self, task: EngineProbeTask) -> None:
        self.probe_task = None
        if self._unloaded:
            return
        if task.error:
            self._report(tr("The FCtL engine could not be loaded: {error}. Check the "
                            "dependencies (see the FCtL tab of the Log Messages panel) and "
                            "restart QGIS.").format(error=task.error), Qgis.MessageLevel.Critical)
            return
        self._fill_devices(task.gpu)
        if self.card is None:
            self.load_model_card()

    def install_dependencies(self) -> None:
        lines: list[str] = []

        class InstallTask(QgsTask):
            dock: FCtLDock | None = None   # None once the dock is unloaded

            def run(self) -> bool:
                try:
                    self.rc = deps.install(log_fn=lines.append, should_cancel=self.isCanceled)
                except Exception as exc:
                    lines.append(str(exc))
                    self.rc = 1
                return self.rc == 0

            def finished(self, ok: bool) -> None:
                if not ok:
                    message_log(tr("Installing the dependencies failed:\n{output}").format(
                        output="\n".join(lines)), Qgis.MessageLevel.Critical)
                target = self.dock
                if target is None:          # the plugin was unloaded meanwhile
                    return
                target.install_task = None
                target.install_button.setEnabled(True)
                if ok:
                    deps.refresh_processing()   # fctl:segment appears without a restart
                    target.status.setText(tr("Dependencies installed.") + "\n"
                                          + "\n".join(deps.summary_lines(lines)))
                    target.refresh_dependencies()
                else:
                    target.status.setText(tr("Installing failed (full output in the FCtL tab "
                                             "of the Log Messages panel):\n{lines}").format(
                                                 lines="\n".join(lines[-8:])))

        self.install_button.setEnabled(False)
        self.status.setText(tr("Installing {packages} with pip...").format(
            packages=", ".join(deps.REQUIRED[m] for m in deps.check().missing)))
        self.install_task = InstallTask(tr("Install FCtL dependencies"),
                                        QgsTask.Flag.CanCancel)
        self.install_task.dock = self
        QgsApplication.taskManager().addTask(self.install_task)

    def _fill_devices(self, gpu: str) -> None:
        """Name the device choices after this machine (``gpu``: the CUDA GPU's name or "");
        the chosen device stays chosen when it still exists."""
        current = self.device_combo.currentData() or "auto"
        self.device_combo.blockSignals(True)   # a refill is no user choice (see settings)
        self.device_combo.clear()   # the table's choices, named after this machine's devices
        self.device_combo.addItem(
            tr("Auto (CUDA: {gpu})").format(gpu=gpu) if gpu else tr("Auto (CPU)"), "auto")
        self.device_combo.addItem(tr("CPU"), "cpu")
        if gpu:
            self.device_combo.addItem(tr("CUDA: {gpu}").format(gpu=gpu), "cuda")
        self.device_combo.setCurrentIndex(max(0, self.device_combo.findData(current)))
        self.device_combo.blockSignals(False)

    # ------------------------------------------------------------------ model
    def model_path(self) -> str | None:
        return self.model_widget.filePath().strip() or None

    def load_model_card(self, *_: object) -> bool:
        """Show the chosen model's card and legend. While the engine is still loading in the
        background (torch not imported yet) this only says so and returns False: the legend is
        filled in when the engine is there (:meth:`_engine_loaded`), or at Run."""
        if not engine_loaded():
            self.legend_list.clear()
            self.card, self.legend = None, []
            self.model_label.setText(tr("The model's classes are shown once the engine has "
                                        "loaded..."))
            return False
        return self._read_card()

    def _read_card(self) -> bool:
        from .engine import engine_import
        DEFAULT_MODEL, CheckpointError, read_card = engine_import(
            "checkpoint", "DEFAULT_MODEL", "CheckpointError", "read_card")

        self.legend_list.clear()
        self.card, self.legend = None, []
        try:
            self.card = read_card(self.model_path() or DEFAULT_MODEL)
        except CheckpointError as exc:
            self.model_label.setText(str(exc))
            return False
        c = self.card
        text = tr("{name}: {backbone}, {patch} px patches, bands {bands}").format(
            name=c.name, backbone=c.config.backbone, patch=c.config.patch_size, bands=c.bands)
        if c.gsd:
            text += tr(", {gsd:g} m/px").format(gsd=c.gsd)
        self.model_label.setText(text)
        self.legend = legend_from_card(c)
        for cls in self.legend:
            pix = QPixmap(14, 14)
            pix.fill(QColor(*cls.color))
            self.legend_list.addItem(QListWidgetItem(QIcon(pix), f"{cls.id}  {cls.name}"))
        return True
