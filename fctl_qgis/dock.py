"""Dock panel for click-through segmentation: layer, model (with its legend), area, the run
options Processing offers (from the engine's run-option table, the rarer ones under "Advanced");
Run/Cancel, progress, and the "click to segment" map tool. Runs in a :class:`SegmentTask`."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from qgis.core import (Qgis, QgsApplication, QgsMapLayerProxyModel, QgsProcessingUtils,
                       QgsProject, QgsRectangle, QgsTask)
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QDockWidget, QFormLayout, QGroupBox,
                                 QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                                 QProgressBar, QPushButton, QScrollArea, QSpinBox, QVBoxLayout,
                                 QWidget)

from . import areas, deps
from .i18n import tr
from .option_widgets import OptionWidgets
from .styling import LegendClass, legend_from_card
from .task import SegmentTask, TaskOutcome

log = logging.getLogger(__name__)

AREAS = ["Whole layer", "Visible map extent", "Features of a polygon layer"]
# Run options of the table the dock shows with its own widgets (attribute names)
OWN_WIDGETS = {"input": "layer_combo", "model": "model_widget", "extent": "area_combo"}


class FCtLDock(QDockWidget):
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
        self._build()
        self.refresh_dependencies()

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
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
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
        self.polygon_combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
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
        self.vector_check = QCheckBox(tr("Also write class polygons"), body)
        self.vector_check.setChecked(True)
        form.addRow("", self.vector_check)
        self.output_widget = QgsFileWidget(body)
        self.output_widget.setStorageMode(QgsFileWidget.GetDirectory)
        self.output_widget.setToolTip(tr("Folder for the results; empty = QGIS's temporary "
                                         "folder"))
        form.addRow(tr("Output folder"), self.output_widget)
        lay.addLayout(form)
        self.advanced_box = QgsCollapsibleGroupBox(tr("Advanced"), body)
        advanced = QFormLayout(self.advanced_box)
        self.run_options.add_rows(advanced, advanced=True)
        for f in (form, advanced):   # labels above their fields: the dock is narrow
            f.setRowWrapPolicy(QFormLayout.WrapAllRows)
            f.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
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
        self.click_size.setSuffix(" px")
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
        lay.addStretch(1)
        scroll = QScrollArea(self)   # the expanded "Advanced" section outgrows small screens
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(body)
        self.setWidget(scroll)
        self._area_changed()

    def _area_changed(self) -> None:
        features = self.area_combo.currentIndex() == 2
        self.polygon_combo.setEnabled(features)
        self.selected_only.setEnabled(features)

    # ------------------------------------------------------------------ dependencies
    def refresh_dependencies(self) -> bool:
        status = deps.check()
        self.deps_box.setVisible(not status.ok)
        self.deps_label.setText(status.message())
        for w in (self.run_button, self.click_button):
            w.setEnabled(status.ok)
        if status.ok:
            self._fill_devices()
            self.load_model_card()
        else:
            self.status.setText(status.message())
        return status.ok

    def install_dependencies(self) -> None:
        lines: list[str] = []
        dock = self

        class InstallTask(QgsTask):
            def run(self) -> bool:
                try:
                    self.rc = deps.install(log_fn=lines.append)
                except Exception as exc:
                    lines.append(str(exc))
                    self.rc = 1
                return self.rc == 0

            def finished(self, ok: bool) -> None:
                dock.install_button.setEnabled(True)
                if ok:
                    dock.status.setText("Dependencies installed. Restart QGIS if FCtL still "
                                        "reports them missing.")
                    dock.refresh_dependencies()
                else:
                    dock.status.setText("Installing failed:\n" + "\n".join(lines[-8:]))

        self.install_button.setEnabled(False)
        self.status.setText("Installing " + ", ".join(deps.REQUIRED[m] for m in
                                                      deps.check().missing) + " with pip...")
        self.install_task = InstallTask("Install FCtL dependencies", QgsTask.CanCancel)
        QgsApplication.taskManager().addTask(self.install_task)

    def _fill_devices(self) -> None:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
        self.device_combo.clear()   # the table's choices, named after this machine's devices
        self.device_combo.addItem(tr("Auto") + f" ({'CUDA: ' + gpu if gpu else 'CPU'})", "auto")
        self.device_combo.addItem(tr("CPU"), "cpu")
        if gpu:
            self.device_combo.addItem(f"CUDA: {gpu}", "cuda")

    # ------------------------------------------------------------------ model
    def model_path(self) -> str | None:
        return self.model_widget.filePath().strip() or None

    def load_model_card(self, *_: object) -> bool:
        from model_core.checkpoint import DEFAULT_MODEL, CheckpointError, read_card

        self.legend_list.clear()
        self.card, self.legend = None, []
        try:
            self.card = read_card(self.model_path() or DEFAULT_MODEL)
        except CheckpointError as exc:
            self.model_label.setText(str(exc))
            return False
        c = self.card
        self.model_label.setText(f"{c.name}: {c.config.backbone}, {c.config.patch_size} px "
                                 f"patches, bands {c.bands}" + (f", {c.gsd:g} m/px" if c.gsd
                                                                 else ""))
        self.legend = legend_from_card(c)
        for cls in self.legend:
            pix = QPixmap(14, 14)
            pix.fill(QColor(*cls.color))
            self.legend_list.addItem(QListWidgetItem(QIcon(pix), f"{cls.id}  {cls.name}"))
        return True

    # ------------------------------------------------------------------ area
    def area_extent(self) -> QgsRectangle | None:
        """The chosen area in the raster layer's CRS (None = whole layer)."""
        layer = self.layer_combo.currentLayer()
        index = self.area_combo.currentIndex()
        if index == 0:
            return None
        if index == 1:
            canvas = self.iface.mapCanvas()
            rect = areas.to_layer_crs(canvas.extent(), canvas.mapSettings().destinationCrs(),
                                      layer)
            return areas.clip_to_layer(rect, layer)
        polygons = self.polygon_combo.currentLayer()
        if polygons is None:
            raise ValueError("choose the polygon layer whose features to segment")
        geom = areas.features_geometry(polygons, layer, self.selected_only.isChecked())
        return areas.clip_to_layer(geom.boundingBox(), layer)

    # ------------------------------------------------------------------ run
    def run(self, extent: QgsRectangle | None = None, use_area: bool = True) -> bool:
        """Start a segmentation of the chosen area (or of ``extent``, layer CRS). Returns False
        with the reason in the status line when it cannot start."""
        if self.task is not None:
            self.status.setText("A segmentation is already running.")
            return False
        try:
            task = self._make_task(extent, use_area)
        except (ValueError, OSError) as exc:
            self.status.setText(f"Cannot run: {exc}")
            return False
        self.task = task
        task.progressChanged.connect(lambda p: self.progress.setValue(int(p)))
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.status.setText("Segmenting...")
        QgsApplication.taskManager().addTask(task)
        return True

    def _make_task(self, extent: QgsRectangle | None, use_area: bool) -> SegmentTask:
        from model_core.inference.option_table import qgis_values, segment_options

        from .qgis_reader import reader_for_layer

        layer = self.layer_combo.currentLayer()
        if layer is None:
            raise ValueError("choose a raster layer")
        if self.card is None and not self.load_model_card():
            raise ValueError(self.model_label.text())
        if extent is None and use_area:
            extent = self.area_extent()
        values = {**self.run_options.values(), **qgis_values(), "model": self.model_path()}
        source, reader = reader_for_layer(layer, extent, values["pixel_size"],
                                          self.card.gsd if self.card else None)
        folder = Path(self.output_widget.filePath().strip() or QgsProcessingUtils.tempFolder())
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{_safe(layer.name())}_fctl_{time.strftime('%Y%m%d_%H%M%S')}"
        options = segment_options(
            values, input=source, output=str(folder / f"{stem}.tif"),
            vector=str(folder / f"{stem}.gpkg") if self.vector_check.isChecked() else None,
            extent=(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum())
            if extent is not None and reader is None else None)
        return SegmentTask(f"FCtL segmentation of {layer.name()}", options, self.legend,
                           reader=reader, on_done=self._done, project=QgsProject.instance(),
                           title=layer.name())

    def cancel(self) -> None:
        if self.task is not None:
            self.status.setText("Cancelling after the current batch...")
            self.task.cancel()

    def _done(self, outcome: TaskOutcome) -> None:
        self.task = None
        self.last_outcome = outcome
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if outcome.ok:
            r = outcome.result
            self.progress.setValue(100)
            self.status.setText(f"Done in {r.seconds:.1f} s on {r.device}: {r.width} x "
                                f"{r.height} px, {r.patches} patches. Results are in the "
                                "'FCtL results' group.")
        elif outcome.cancelled:
            self.progress.setValue(0)
            self.status.setText("Cancelled: no output was written.")
        else:
            self.status.setText(f"Segmentation failed: {outcome.error}")
            self.iface.messageBar().pushMessage("FCtL", outcome.error, Qgis.Critical, 10)
        self.finished.emit(outcome)

    # ------------------------------------------------------------------ map tool
    def _toggle_map_tool(self, on: bool) -> None:
        from .maptool import ClickSegmentTool

        canvas = self.iface.mapCanvas()
        if on:
            if self.map_tool is None:
                self.map_tool = ClickSegmentTool(canvas)
                self.map_tool.clicked.connect(self.segment_at)
                self.map_tool.deactivated.connect(lambda: self.click_button.setChecked(False))
            canvas.setMapTool(self.map_tool)
        elif self.map_tool is not None and canvas.mapTool() is self.map_tool:
            canvas.unsetMapTool(self.map_tool)

    def segment_at(self, point) -> bool:
        """Segment a square window around ``point`` (canvas CRS)."""
        layer = self.layer_combo.currentLayer()
        if layer is None:
            self.status.setText("Cannot run: choose a raster layer")
            return False
        crs = self.iface.mapCanvas().mapSettings().destinationCrs()
        try:
            rect = areas.clip_to_layer(areas.window_around(point, crs, layer,
                                                           self.click_size.value()), layer)
        except ValueError as exc:
            self.status.setText(f"Cannot run: {exc}")
            return False
        return self.run(rect)

    def unload(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.map_tool is not None:
            self._toggle_map_tool(False)
            self.map_tool = None


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "layer"
