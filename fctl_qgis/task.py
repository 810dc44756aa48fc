"""Background segmentation for the dock: a :class:`QgsTask` around the engine, and adding the
styled results to the project."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from qgis.core import (QgsLayerTreeGroup, QgsProject, QgsRasterLayer, QgsTask,
                       QgsVectorLayer)

from .styling import LegendClass, style_layer

log = logging.getLogger(__name__)

RESULTS_GROUP = "FCtL results"


@dataclass
class TaskOutcome:
    """What the dock learns when the task ends (in the main thread)."""

    ok: bool
    cancelled: bool = False
    error: str = ""
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
        super().__init__(description, QgsTask.CanCancel)
        self.options = options
        self.legend = legend
        self.reader = reader
        self.on_done = on_done
        self.project = project
        self.post_run = post_run
        self.title = title
        self.result = None
        self.error = ""
        self.cancelled = False
        self.messages: list[str] = []

    def run(self) -> bool:  # worker thread: no GUI or project access here
        from model_core.inference import Cancelled, segment

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
        except Exception as exc:  # reported to the user in finished()
            log.exception("FCtL segmentation failed")
            self.error = str(exc) or exc.__class__.__name__
            return False
        finally:
            if self.reader is not None:
                self.reader.close()

    def finished(self, ok: bool) -> None:  # main thread
        outcome = TaskOutcome(ok=ok, cancelled=self.cancelled or self.isCanceled(),
                              error=self.error, result=self.result)
        if ok and self.result is not None:
            try:
                outcome.layers = add_results(self.result, self.legend, self.project,
                                             self.title)
            except Exception as exc:
                outcome.ok, outcome.error = False, f"results could not be loaded: {exc}"
        if self.on_done is not None:
            self.on_done(outcome)


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
