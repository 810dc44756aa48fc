"""Dock panel for click-through segmentation: layer, model (with its legend), area, the run
options Processing offers (from the engine's run-option table, the rarer ones under "Advanced");
Run/Cancel, progress, and the "click to segment" map tool. Runs in a :class:`SegmentTask`.

This module holds the :class:`FCtLDock` widget, its layout, its remembered settings and its
unload; the rest is in mixins: :mod:`.dock_engine` (dependencies, background engine load,
devices, model card), :mod:`.dock_area` (area, mask, map tool), :mod:`.dock_run` (run, cancel,
outcome) and :mod:`.dock_output` (output file names)."""

from __future__ import annotations

import logging

from qgis.core import QgsMapLayerProxyModel, QgsTask
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QFormLayout, QFrame,
                                 QGroupBox, QHBoxLayout, QLabel, QListWidget, QProgressBar,
                                 QPushButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from . import settings
from .dock_area import AREAS, DockAreaMixin
from .dock_area import reprojection_message as _reprojection_message  # noqa: F401 (re-export)
from .dock_engine import DockEngineMixin
from .dock_output import safe_name as _safe  # noqa: F401 (re-export)
from .dock_output import unique_stem as _unique_stem  # noqa: F401 (re-export)
from .dock_run import DockRunMixin
from .i18n import tr
from .option_widgets import OptionWidgets
from .styling import LegendClass
from .task import EngineProbeTask, SegmentTask, TaskOutcome

log = logging.getLogger(__name__)

__all__ = ["AREAS", "OWN_WIDGETS", "FCtLDock"]

# Run options of the table the dock shows with its own widgets (attribute names)
OWN_WIDGETS = {"input": "layer_combo", "model": "model_widget", "extent": "area_combo",
               "mask": "polygon_combo"}


class FCtLDock(DockEngineMixin, DockAreaMixin, DockRunMixin, QDockWidget):
    """The plugin's panel. ``finished`` carries the :class:`TaskOutcome` of each run."""

    finished = pyqtSignal(object)

    def __init__(self, iface, parent: QWidget | None = None) -> None:
        super().__init__(tr("FCtL segmentation"), parent)
        self.setObjectName("FCtLDock")
        self.iface = iface
        self.task: SegmentTask | None = None
        self.install_task: QgsTask | None = None
        self.legend: list[LegendClass] = []
        self.card = None
        self.map_tool = None
        self.last_outcome: TaskOutcome | None = None
        self.probe_task: EngineProbeTask | None = None
        self._engine_requested = False   # the background engine load started (first show)
        self._unloaded = False
        self._build()
        self.restore_settings()
        self.refresh_dependencies()
        self._connect_settings()   # after restoring: restoring must not overwrite what is stored

    # ------------------------------------------------------------------ UI
    def _build(self) -> None:
        body = QWidget(self)
        lay = QVBoxLayout(body)
        self.deps_box = QGroupBox(tr("Missing dependencies"), body)
        dl = QVBoxLayout(self.deps_box)
        self.deps_label = QLabel(self.deps_box)
        self.deps_label.setWordWrap(True)
        self.install_button = QPushButton(tr("Install dependencies"), self.deps_box)
        self.install_button.clicked.connect(self.install_dependencies)
        dl.addWidget(self.deps_label)
        dl.addWidget(self.install_button)
        lay.addWidget(self.deps_box)

        form = QFormLayout()
        self.layer_combo = QgsMapLayerComboBox(body)
        self.layer_combo.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        form.addRow(tr("Raster layer"), self.layer_combo)
        self.model_widget = QgsFileWidget(body)
        self.model_widget.setFilter(tr("FCtL checkpoints (*.safetensors)"))
        self.model_widget.setToolTip(tr("Empty = the bundled default model"))
        self.model_widget.fileChanged.connect(self.load_model_card)
        form.addRow(tr("Model"), self.model_widget)
        self.model_label = QLabel(body)
        self.model_label.setWordWrap(True)
        form.addRow("", self.model_label)
        self.legend_list = QListWidget(body)
        self.legend_list.setMaximumHeight(140)
        form.addRow(tr("Classes"), self.legend_list)
        self.area_combo = QComboBox(body)
        self.area_combo.addItems([tr(a) for a in AREAS])
        form.addRow(tr("Area"), self.area_combo)
        self.polygon_combo = QgsMapLayerComboBox(body)
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
        self.polygon_combo.setAllowEmptyLayer(True)
        form.addRow(tr("Polygon layer"), self.polygon_combo)
        self.selected_only = QCheckBox(tr("Selected features only (when any)"), body)
        self.selected_only.setChecked(True)
        form.addRow("", self.selected_only)
        self.area_combo.currentIndexChanged.connect(self._area_changed)
        # the run options of the engine's table, as Processing offers them
        self.run_options = OptionWidgets(body, tr)
        self.device_combo = self.run_options["device"]
        self.batch_spin = self.run_options["batch_size"]
        self.tta_check = self.run_options["tta"]
        self.run_options.add_rows(form, advanced=False)
        # layers without a native pixel size (XYZ/WMS): their zoom levels as pixel sizes
        self.zoom_label = QLabel(tr("Reading resolution of the web layer"), body)
        self.zoom_combo = QComboBox(body)
        self.zoom_combo.setToolTip(tr("Sets the processing pixel size to one of the layer's "
                                      "zoom levels; a whole web layer needs a coarse one"))
        self.zoom_combo.activated.connect(self._zoom_chosen)
        form.addRow(self.zoom_label, self.zoom_combo)
        self.layer_combo.layerChanged.connect(self._layer_changed)
        self.vector_check = QCheckBox(tr("Also write class polygons"), body)
        self.vector_check.setChecked(True)
        form.addRow("", self.vector_check)
        self.output_widget = QgsFileWidget(body)
        self.output_widget.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.output_widget.setToolTip(tr("Folder for the results; empty = QGIS's temporary "
                                         "folder"))
        form.addRow(tr("Output folder"), self.output_widget)
        lay.addLayout(form)
        self.advanced_box = QgsCollapsibleGroupBox(tr("Advanced"), body)
        advanced = QFormLayout(self.advanced_box)
        self.run_options.add_rows(advanced, advanced=True)
        for f in (form, advanced):   # labels above their fields: the dock is narrow
            f.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)
            f.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.advanced_box.setCollapsed(True)
        lay.addWidget(self.advanced_box)

        buttons = QHBoxLayout()
        self.run_button = QPushButton(tr("Run"), body)
        self.run_button.clicked.connect(lambda: self.run())
        self.cancel_button = QPushButton(tr("Cancel"), body)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.click_button = QPushButton(tr("Click to segment"), body)
        self.click_button.setCheckable(True)
        self.click_button.toggled.connect(self._toggle_map_tool)
        self.click_size = QSpinBox(body)
        self.click_size.setRange(64, 8192)
        self.click_size.setValue(1024)
        self.click_size.setSuffix(tr(" px"))
        self.click_size.setToolTip(tr("Side of the window segmented around a clicked point"))
        for w in (self.run_button, self.cancel_button, self.click_button, self.click_size):
            buttons.addWidget(w)
        lay.addLayout(buttons)
        self.progress = QProgressBar(body)
        self.progress.setRange(0, 100)
        lay.addWidget(self.progress)
        self.status = QLabel(body)
        self.status.setWordWrap(True)
        lay.addWidget(self.status)
        from .train_panel import TrainSection   # issue 19: fine-tune on labelled polygons

        self.train_section = TrainSection(self, body)
        lay.addWidget(self.train_section)
        lay.addStretch(1)
        scroll = QScrollArea(self)   # the expanded "Advanced" section outgrows small screens
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self._area_changed()
        self._layer_changed()

    def _layer_changed(self, *_: object) -> None:
        """Offer the zoom levels of a layer without a native pixel size (else hide them)."""
        from .web_levels import reading_levels

        levels = reading_levels(self.layer_combo.currentLayer())
        self.zoom_combo.clear()
        self.zoom_combo.addItem(tr("the processing pixel size above"), 0.0)
        for text, metres in levels:
            self.zoom_combo.addItem(text, metres)
        for w in (self.zoom_label, self.zoom_combo):
            w.setVisible(bool(levels))

    def _zoom_chosen(self, index: int) -> None:
        metres = self.zoom_combo.itemData(index)
        if metres:
            self.run_options["pixel_size"].setValue(float(metres))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        if not self._engine_requested:
            # torch loads in a worker thread once the dock is on screen; "Auto" meanwhile
            QTimer.singleShot(0, self._load_engine)

    # ------------------------------------------------------------------ settings
    def _settings_names(self) -> list[str]:
        return [*self.run_options.state(), "model", "output_folder", "click_size",
                "write_polygons"]

    def restore_settings(self) -> None:
        """The choices of the last session (QgsSettings ``fctl/...``); absent keys keep the
        defaults."""
        stored = settings.read_all(self._settings_names())
        self.run_options.restore(stored)
        if "model" in stored:
            self.model_widget.setFilePath(str(stored["model"] or ""))
        if "output_folder" in stored:
            self.output_widget.setFilePath(str(stored["output_folder"] or ""))
        self.click_size.setValue(settings.as_int(stored.get("click_size"),
                                                 self.click_size.value()))
        self.vector_check.setChecked(settings.as_bool(stored.get("write_polygons"),
                                                      self.vector_check.isChecked()))

    def save_settings(self, *_: object) -> None:
        """Store the current choices (called on every change, so a crash loses nothing)."""
        if self._unloaded:
            return
        settings.write_all({**self.run_options.state(), "model": self.model_path() or "",
                            "output_folder": self.output_widget.filePath().strip(),
                            "click_size": self.click_size.value(),
                            "write_polygons": self.vector_check.isChecked()})

    def _connect_settings(self) -> None:
        self.run_options.connect_changed(self.save_settings)
        self.model_widget.fileChanged.connect(self.save_settings)
        self.output_widget.fileChanged.connect(self.save_settings)
        self.click_size.valueChanged.connect(self.save_settings)
        self.vector_check.toggled.connect(self.save_settings)

    # ------------------------------------------------------------------ unload
    def unload(self) -> None:
        """Detach from everything that could call back into this dock after it is deleted:
        a run is cancelled and waited for (the engine removes its partial files), the engine
        probe and the installer forget it, the map tool is switched off."""
        self._unloaded = True
        self.train_section.unload()
        self._detach_task()
        if self.probe_task is not None:
            self.probe_task.on_done = None
            self.probe_task = None
        if self.install_task is not None:
            self.install_task.dock = None   # pip cannot be interrupted: let it finish alone
            self.install_task = None
        self._detach_map_tool()
