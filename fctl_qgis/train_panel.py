"""The dock's "Train on this layer" section: labels layer, class field and steps; runs
``fctl:train`` on the dock's raster layer in a background task (Processing's
:class:`QgsProcessingAlgRunnerTask`) and then selects the new model, whose legend the dock
shows."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from qgis.core import (QgsApplication, QgsMapLayerProxyModel, QgsProcessingAlgRunnerTask,
                       QgsProcessingContext, QgsProcessingFeedback, QgsProcessingUtils,
                       QgsProject)
from qgis.gui import QgsCollapsibleGroupBox, QgsFieldComboBox, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import (QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                                 QSpinBox, QWidget)

from .i18n import tr

log = logging.getLogger(__name__)

DEFAULT_STEPS = 200      # the engine's default (model_core.training.finetune.DEFAULT_STEPS)


class _Feedback(QgsProcessingFeedback):
    """Keeps the errors the algorithm reports (from the task's thread) for the status line."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []
        self.text = ""

    def setProgressText(self, text: str) -> None:  # noqa: N802
        self.text = text   # shown by the panel on the task's progress signal (main thread)
        super().setProgressText(text)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802,N803
        self.errors.append(error)
        super().reportError(error, fatalError)


class TrainSection(QgsCollapsibleGroupBox):
    """Collapsed by default. ``dock`` is the :class:`~fctl_qgis.dock.FCtLDock` whose raster
    layer, model (the base model), device and output folder are used."""

    def __init__(self, dock, parent: QWidget | None = None) -> None:
        super().__init__(tr("Train on this layer"), parent)
        self.dock = dock
        self.task: QgsProcessingAlgRunnerTask | None = None
        self.last_results: dict[str, Any] | None = None
        self.last_ok: bool | None = None
        self._context: QgsProcessingContext | None = None
        self._feedback: _Feedback | None = None
        form = QFormLayout(self)
        self.labels_combo = QgsMapLayerComboBox(self)
        self.labels_combo.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer |
                                     QgsMapLayerProxyModel.Filter.RasterLayer)
        self.labels_combo.setAllowEmptyLayer(True)
        self.labels_combo.setToolTip(tr("Polygons you drew over the raster, or a label raster"))
        form.addRow(tr("Labels layer"), self.labels_combo)
        self.field_combo = QgsFieldComboBox(self)
        self.field_combo.setAllowEmptyFieldName(True)
        self.field_combo.setToolTip(tr("Field holding the class (integer ids or names); empty "
                                       "= every polygon is one class against the background"))
        form.addRow(tr("Class field"), self.field_combo)
        self.labels_combo.layerChanged.connect(self._labels_changed)
        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(1, 100000)
        self.steps_spin.setValue(DEFAULT_STEPS)
        self.steps_spin.setToolTip(tr("Training steps of 4 patches each"))
        form.addRow(tr("Steps"), self.steps_spin)
        buttons = QHBoxLayout()
        self.train_button = QPushButton(tr("Train"), self)
        self.train_button.clicked.connect(lambda: self.start())
        self.cancel_button = QPushButton(tr("Cancel training"), self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        form.addRow(buttons)
        self.progress = QProgressBar(self)
        self.progress.setRange(0, 100)
        form.addRow(self.progress)
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        form.addRow(self.status)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
        self.setCollapsed(True)
        self._labels_changed(self.labels_combo.currentLayer())

    def _labels_changed(self, layer) -> None:
        vector = layer is not None and hasattr(layer, "fields")
        self.field_combo.setLayer(layer if vector else None)
        self.field_combo.setEnabled(vector)

    def output_path(self, raster_name: str) -> Path:
        folder = Path(self.dock.output_widget.filePath().strip() or
                      QgsProcessingUtils.tempFolder())
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in raster_name)[:40]
        return folder / f"{safe or 'layer'}_model_{time.strftime('%Y%m%d_%H%M%S')}.safetensors"

    def start(self) -> bool:
        """Start training; False with the reason in the status line when it cannot start."""
        from .train_inputs import DEVICES

        if self.task is not None:
            self.status.setText(tr("A training is already running."))
            return False
        raster = self.dock.layer_combo.currentLayer()
        labels = self.labels_combo.currentLayer()
        alg = QgsApplication.processingRegistry().algorithmById("fctl:train")
        problem = (tr("choose the raster layer above") if raster is None else
                   tr("choose the labels layer") if labels is None or labels is raster else
                   tr("the FCtL algorithms are not available (see the dependencies)")
                   if alg is None else "")
        if problem:
            self.status.setText(tr("Cannot train: {0}").format(problem))
            return False
        out = self.output_path(raster.name())
        device = self.dock.device_combo.currentData() or "auto"
        params = {"INPUT": raster, "LABELS": labels,
                  "CLASS_FIELD": self.field_combo.currentField() or None,
                  "STEPS": self.steps_spin.value(), "BASE_MODEL": self.dock.model_path(),
                  "DEVICE": DEVICES.index(device) if device in DEVICES else 0,
                  "OUTPUT_MODEL": str(out), "TRAINING_LOG": str(out.with_suffix(".csv")),
                  "TRAINING_PLOT": str(out.with_suffix(".png"))}
        self._context = QgsProcessingContext()
        self._context.setProject(QgsProject.instance())
        self._feedback = _Feedback()
        self.task = QgsProcessingAlgRunnerTask(alg, params, self._context, self._feedback)
        self.task.progressChanged.connect(self._progress)
        self.task.executed.connect(self._done)
        self.train_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText(tr("Training on {0}...").format(raster.name()))
        QgsApplication.taskManager().addTask(self.task)
        return True

    def _progress(self, value: float) -> None:
        self.progress.setValue(int(value))
        if self._feedback is not None and self._feedback.text:
            self.status.setText(self._feedback.text)

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText(tr("Cancelling after the current step..."))
            self._feedback.cancel()

    def _done(self, ok: bool, results: dict) -> None:
        cancelled = self._feedback is not None and self._feedback.isCanceled()
        self.task = None
        self.last_ok, self.last_results = ok, dict(results or {})
        self.train_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        model = (results or {}).get("OUTPUT_MODEL")
        if ok and model and Path(model).is_file():
            self.progress.setValue(100)
            miou = results.get("VALIDATION_MIOU")
            self.dock.model_widget.setFilePath(model)     # the dock shows its legend
            self.status.setText(tr("Trained: {0} selected{1}.").format(
                Path(model).name, "" if miou is None else
                tr(" (validation mIoU {0:.3f})").format(miou)))
        elif cancelled:
            self.progress.setValue(0)
            self.status.setText(tr("Training cancelled: no model was written."))
        else:
            errors = self._feedback.errors if self._feedback is not None else []
            self.status.setText(tr("Training failed: {0}").format(
                errors[-1] if errors else tr("see the Processing log")))

    def unload(self) -> None:
        if self.task is not None and self._feedback is not None:
            self._feedback.cancel()
