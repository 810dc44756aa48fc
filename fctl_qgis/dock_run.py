"""Running a segmentation from the dock: the :class:`SegmentTask` built from the dock's choices
and started in QGIS's task manager, its progress, Cancel, and the outcome reported in the status
line, the Log Messages panel and (errors) the message bar.

:class:`DockRunMixin` is a part of :class:`~fctl_qgis.dock.FCtLDock`: it uses the dock's
widgets, its model card (``card``, ``legend``, ``_read_card``) and its area
(``_area_and_mask``); each run's :class:`TaskOutcome` is emitted as the dock's ``finished``."""

from __future__ import annotations

from functools import partial

from qgis.core import Qgis, QgsApplication, QgsCsException, QgsProject, QgsRectangle

from .dock_area import reprojection_message
from .dock_output import output_stem
from .i18n import tr
from .log import TAG, message_log
from .task import SegmentTask, TaskOutcome


class DockRunMixin:
    """Run, Cancel, progress and the outcome of a run."""

    def run(self, extent: QgsRectangle | None = None, use_area: bool = True) -> bool:
        """Start a segmentation of the chosen area (or of ``extent``, layer CRS). Returns False
        with the reason in the status line when it cannot start."""
        if self.task is not None:
            self.status.setText(tr("A segmentation is already running: wait for it or cancel "
                                   "it."))
            return False
        try:
            task = self._make_task(extent, use_area)
        except QgsCsException as exc:
            return self._refuse(reprojection_message(exc, self.layer_combo.currentLayer()))
        except (ValueError, OSError) as exc:
            return self._refuse(str(exc))
        self.task = task
        # a method, not a lambda: unload disconnects exactly this slot
        task.progressChanged.connect(self._task_progress)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(tr("Segmenting..."))
        QgsApplication.taskManager().addTask(task)
        return True

    def _task_progress(self, percent: float) -> None:
        self.progress.setValue(int(percent))

    def _refuse(self, reason: str) -> bool:
        """A run that cannot start: the reason in the status line and the message log."""
        self._report(tr("Cannot run: {reason}").format(reason=reason), Qgis.MessageLevel.Warning)
        return False

    def _report(self, text: str, level: Qgis.MessageLevel = Qgis.MessageLevel.Info) -> None:
        """Status line + the FCtL tab of the Log Messages panel; errors also in the message
        bar."""
        self.status.setText(text)
        message_log(text, level)
        if level == Qgis.MessageLevel.Critical:
            self.iface.messageBar().pushMessage(TAG, text, level, 10)

    def _make_task(self, extent: QgsRectangle | None, use_area: bool) -> SegmentTask:
        from .engine import engine_import
        qgis_values, segment_options = engine_import(
            "inference.option_table", "qgis_values", "segment_options")

        from .masks import remove_mask
        from .qgis_reader import reader_for_layer

        layer = self.layer_combo.currentLayer()
        if layer is None:
            raise ValueError(tr("choose a raster layer"))
        if self.card is None and not self._read_card():   # the engine loads now if need be
            raise ValueError(self.model_label.text())
        extent, mask = self._area_and_mask(extent, use_area)
        try:
            values = {**self.run_options.values(), **qgis_values(), "model": self.model_path()}
            source, reader = reader_for_layer(layer, extent, values["pixel_size"],
                                              self.card.gsd if self.card else None)
            folder, stem = output_stem(self.output_widget.filePath(), layer.name())
            # the extent is in the layer's CRS, a provider reader's too: applied either way
            options = segment_options(
                values, input=source, output=str(folder / f"{stem}.tif"), mask=mask,
                vector=str(folder / f"{stem}.gpkg") if self.vector_check.isChecked() else None,
                extent=(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                        extent.yMaximum()) if extent is not None else None)
            task = SegmentTask(tr("FCtL segmentation of {layer}").format(layer=layer.name()),
                               options, self.legend,
                               reader=reader, on_done=self._done,
                               project=QgsProject.instance(), title=layer.name())
        except BaseException:
            remove_mask(mask)
            raise
        if mask is not None:   # removed when the task ends, even after the dock is gone
            for signal in (task.taskCompleted, task.taskTerminated):
                signal.connect(partial(remove_mask, mask))
        return task

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText(tr("Cancelling after the current batch..."))
            self.task.cancel()

    def _done(self, outcome: TaskOutcome) -> None:
        self.task = None
        self.last_outcome = outcome
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if outcome.ok:
            r = outcome.result
            self.progress.setValue(100)
            self._report(tr("Done in {seconds:.1f} s on {device}: {width} x {height} px, "
                            "{patches} patches. Results are in the 'FCtL results' group.")
                         .format(seconds=r.seconds, device=r.device, width=r.width,
                                 height=r.height, patches=r.patches))
        elif outcome.cancelled:
            self.progress.setValue(0)
            self._report(tr("Cancelled: no output was written."))
        else:   # the task logged the traceback; here the short message, also in the bar
            self.status.setText(tr("Segmentation failed: {error}").format(error=outcome.error))
            self.iface.messageBar().pushMessage(
                TAG, tr("Segmentation failed: {error} (details in the FCtL tab of the Log "
                        "Messages panel)").format(error=outcome.error),
                Qgis.MessageLevel.Critical, 10)
        self.finished.emit(outcome)

    def _detach_task(self) -> None:
        """Forget the running task (at unload): the task is cancelled and waited for, the engine
        removes its partial files."""
        if self.task is not None:
            task, self.task = self.task, None
            try:
                task.progressChanged.disconnect(self._task_progress)
            except (TypeError, RuntimeError):   # already finished and deleted by QGIS
                pass
            try:
                task.detach()
            except RuntimeError:   # the C++ task is gone: it has finished already
                pass
