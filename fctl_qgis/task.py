"""Background segmentation for the dock: a :class:`QgsTask` around the engine, and adding the
styled results to the project."""

from __future__ import annotations

import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from qgis.core import (Qgis, QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsTask,
                       QgsVectorLayer)

from .i18n import tr
from .log import message_log
from .styling import LegendClass, style_layer

log = logging.getLogger(__name__)

RESULTS_GROUP = "FCtL results"
# How long unloading the plugin waits for a cancelled run to reach the engine's next
# cancellation check (one batch; a large batch on a slow CPU can take a while).
UNLOAD_WAIT_MS = 120_000


@dataclass
class TaskOutcome:
    """What the dock learns when the task ends (in the main thread)."""

    ok: bool
    cancelled: bool = False
    error: str = ""
    traceback: str = ""            # of a failed run (also in the Log Messages panel)
    result: object = None          # model_core.inference.SegmentResult
    layers: list = field(default_factory=list)


class SegmentTask(QgsTask):
    """Runs :func:`model_core.inference.segment` in a worker thread.

    ``options`` is a ready :class:`SegmentOptions`; ``reader`` (made in the main thread, it
    clones the layer's provider) is handed to the engine. Cancelling is checked between batches;
    the engine then removes its partial files. On success the outputs are loaded, styled with
    ``legend`` and put in the "FCtL results" group; ``on_done`` receives a :class:`TaskOutcome`.
    """

    def __init__(self, description: str, options, legend: list[LegendClass], reader=None,
                 on_done: Callable[[TaskOutcome], None] | None = None,
                 project: QgsProject | None = None, post_run: Callable | None = None,
                 title: str | None = None) -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.options = options
        self.legend = legend
        self.reader = reader
        self.on_done = on_done
        self.project = project
        self.post_run = post_run
        self.title = title
        self.result = None
        self.error = ""
        self.traceback = ""
        self.cancelled = False
        self.detached = False
        self.messages: list[str] = []

    def run(self) -> bool:  # worker thread: no GUI or project access here
        from .engine import engine_import
        Cancelled, segment = engine_import("inference", "Cancelled", "segment")

        def progress(fraction: float, message: str) -> None:
            self.setProgress(100.0 * max(0.0, min(1.0, fraction)))
            if message and (not self.messages or self.messages[-1] != message):
                self.messages.append(message)

        try:
            self.result = segment(self.options, progress=progress, is_cancelled=self.isCanceled,
                                  reader=self.reader)
            if self.post_run is not None:
                self.post_run(self.result)
            return True
        except Cancelled:
            self.cancelled = True
            return False
        except Exception as exc:  # reported to the user (and the message log) in finished()
            self.error = str(exc) or exc.__class__.__name__
            self.traceback = traceback.format_exc()
            return False
        finally:
            if self.reader is not None:
                self.reader.close()

    def detach(self, wait_ms: int = UNLOAD_WAIT_MS) -> None:
        """Cancel the run for good and forget whoever started it (the dock being unloaded):
        no callback, no results added; waits up to ``wait_ms`` for the worker to stop, so that
        the engine has removed its partial files when this returns."""
        self.detached = True
        self.on_done = None
        self.post_run = None
        self.cancel()
        if self.status() == QgsTask.TaskStatus.Running:
            self.waitForFinished(wait_ms)

    def finished(self, ok: bool) -> None:  # main thread
        outcome = TaskOutcome(ok=ok, cancelled=self.cancelled or self.isCanceled(),
                              error=self.error, traceback=self.traceback, result=self.result)
        if not ok and not outcome.cancelled:
            # the whole traceback for bug reports; the dock shows the short message
            message_log(tr("Segmentation failed: {error}\n{traceback}").format(
                error=self.error, traceback=self.traceback), Qgis.MessageLevel.Critical)
        if self.detached:
            # the plugin was unloaded: nobody shows these results; a run that completed before
            # the cancel took effect leaves no orphan files either
            if ok and self.result is not None:
                _remove_outputs(self.result)
            return
        if ok and self.result is not None:
            try:
                outcome.layers = add_results(self.result, self.legend, self.project,
                                             self.title)
            except Exception as exc:
                outcome.ok = False
                outcome.error = tr("the results could not be loaded ({error}); open {path} "
                                   "with Layer > Add Layer").format(error=exc,
                                                                     path=self.result.output)
                message_log(outcome.error, Qgis.MessageLevel.Critical)
        if self.on_done is not None:
            self.on_done(outcome)


def engine_loaded() -> bool:
    """True once PyTorch is imported (by the probe below, Processing or a test): reading a model
    card or naming the GPU is then cheap enough for the GUI thread."""
    return "torch" in sys.modules


# The probe's answer, kept for the session: later docks need not ask again.
PROBED: dict[str, str] = {}


class EngineProbeTask(QgsTask):
    """Imports PyTorch and the checkpoint reader and asks for the CUDA GPU's name in a worker
    thread: importing torch takes seconds, which the dock must not spend on the GUI thread.
    ``on_done(task)`` runs in the main thread; ``gpu`` is "" without a GPU, ``error`` says why
    the engine did not load."""

    def __init__(self, on_done: Callable[["EngineProbeTask"], None] | None = None) -> None:
        super().__init__(tr("Loading the FCtL engine"), QgsTask.Flag.CanCancel)
        self.on_done = on_done
        self.gpu = ""
        self.error = ""

    def run(self) -> bool:  # worker thread
        try:
            from .engine import engine_module, import_torch

            torch = import_torch()
            engine_module("checkpoint")   # the dock reads model cards with it
            self.gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
            return True
        except Exception as exc:  # shown in the dock, traceback in the message log
            self.error = f"{exc.__class__.__name__}: {exc}"
            message_log(tr("The FCtL engine could not be loaded: {error}\n{traceback}").format(
                error=self.error, traceback=traceback.format_exc()), Qgis.MessageLevel.Critical)
            return False

    def finished(self, ok: bool) -> None:  # main thread
        if ok:
            PROBED["gpu"] = self.gpu
        if self.on_done is not None:
            self.on_done(self)


def _remove_outputs(result) -> None:
    for path in (getattr(result, "output", None), getattr(result, "vector", None)):
        if path:
            try:
                Path(path).unlink(missing_ok=True)
            except OSError as exc:
                log.warning("could not remove %s (%s): delete it by hand", path, exc)


def results_group(project: QgsProject) -> QgsLayerTreeGroup:
    root = project.layerTreeRoot()
    group = root.findGroup(RESULTS_GROUP)
    return group if group is not None else root.insertGroup(0, RESULTS_GROUP)


def add_results(result, legend: list[LegendClass], project: QgsProject | None = None,
                title: str | None = None) -> list:
    """Load a run's raster (and polygons) into ``project``'s results group, styled, named
    "<title> classes" / "<title> polygons" (default title: the file name)."""
    project = project or QgsProject.instance()
    stem = title or Path(result.output).stem
    layers = []
    if result.vector:
        vec = QgsVectorLayer(result.vector, f"{stem} polygons", "ogr")
        if not vec.isValid():
            raise OSError(f"cannot open {result.vector}")
        layers.append(vec)
    ras = QgsRasterLayer(result.output, f"{stem} classes", "gdal")
    if not ras.isValid():
        raise OSError(f"cannot open {result.output}")
    layers.append(ras)
    group = results_group(project)
    for lyr in layers:   # polygons above the raster
        style_layer(lyr, legend)
        project.addMapLayer(lyr, False)
        group.addLayer(lyr).setExpanded(lyr is layers[-1])   # the raster's legend shows
    # a view does not expand a group that was empty when it appeared: toggle once filled
    group.setExpanded(False)
    group.setExpanded(True)
    return layers
