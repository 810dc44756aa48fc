"""``fctl:segment``: semantic segmentation of a raster layer with an FCtL model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingFeedback, QgsProcessingLayerPostProcessorInterface,
                       QgsProcessingOutputNumber, QgsProcessingOutputString)
from qgis.PyQt.QtGui import QIcon

from .i18n import tr
from .parameters import deprecated_given, help_text, parameter_definitions, read_values
from .styling import LegendClass, legend_from_card, style_layer

log = logging.getLogger(__name__)

RASTER_NAME = "FCtL classes"
VECTOR_NAME = "FCtL polygons"


class StylePostProcessor(QgsProcessingLayerPostProcessorInterface):
    """Styles an output once Processing has loaded it into the project."""

    # Processing does not take ownership of post-processors: keep them alive here.
    _alive: list["StylePostProcessor"] = []

    def __init__(self, legend: list[LegendClass]) -> None:
        super().__init__()
        self.legend = legend

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        style_layer(layer, self.legend)

    @classmethod
    def create(cls, legend: list[LegendClass]) -> "StylePostProcessor":
        inst = cls(legend)
        cls._alive.append(inst)
        return inst


HELP = ("Classifies every pixel of an ultra-high-resolution raster with an FCtL model (local "
        "patch + medium and large contexts fused by locality-aware attention). Writes a class "
        "raster (GeoTIFF) and optionally class polygons (GeoPackage), styled with the model's "
        "class colours and names.")


class SegmentAlgorithm(QgsProcessingAlgorithm):
    """Its parameters are built from the engine's run-option table (:mod:`.parameters`); the
    constants name them for scripts (a test checks them against the table)."""

    INPUT = "INPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
    EXTENT = "EXTENT"
    MASK = "MASK"
    PIXEL_SIZE = "PIXEL_SIZE"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    TTA = "TTA"
    EXACT_CONTEXT = "EXACT_CONTEXT"
    SHARED_CONTEXT = "SHARED_CONTEXT"      # deprecated: the shared context is the default
    MIN_AREA = "MIN_AREA"
    OUTPUT_RASTER = "OUTPUT_RASTER"
    OUTPUT_VECTOR = "OUTPUT_VECTOR"

    def tr(self, text: str) -> str:
        return tr(text)

    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:  # noqa: N802
        return self.tr("Segment raster (FCtL)")

    def shortHelpString(self) -> str:  # noqa: N802
        return help_text(HELP, self.tr)

    def createInstance(self) -> "SegmentAlgorithm":  # noqa: N802
        return SegmentAlgorithm()

    def icon(self) -> QIcon:
        from .provider import icon_path

        return QIcon(icon_path())

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        for param in parameter_definitions(self.tr):
            self.addParameter(param)
        self.addOutput(QgsProcessingOutputString("DEVICE", self.tr("Device used")))
        self.addOutput(QgsProcessingOutputNumber("PATCHES", self.tr("Patches processed")))
        self.addOutput(QgsProcessingOutputNumber("SECONDS", self.tr("Run time (s)")))

    # ------------------------------------------------------------------ run
    def prepareAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        """Main thread: resolve the layer, model card and reader (a provider clone) here."""
        from .engine import engine_import
        DEFAULT_MODEL, CheckpointError, read_card = engine_import(
            "checkpoint", "DEFAULT_MODEL", "CheckpointError", "read_card")
        qgis_values, segment_options = engine_import(
            "inference.option_table", "qgis_values", "segment_options")

        from .masks import mask_from_parameter, remove_mask
        from .qgis_reader import reader_for_layer

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException("the input raster layer could not be loaded: check its "
                                         "path or source")
        for old, new in deprecated_given(parameters):
            feedback.pushInfo(f"{old} is deprecated and ignored: what it turned on is the "
                              f"default now (see {new})")
        values = {**read_values(self, parameters, context), **qgis_values()}
        try:
            card = read_card(values["model"] or DEFAULT_MODEL)
        except CheckpointError as exc:
            raise QgsProcessingException(str(exc)) from exc
        rect = None
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if rect.isNull() or rect.isEmpty():
                rect = None
        out_raster = self.parameterAsOutputLayer(parameters, self.OUTPUT_RASTER, context)
        out_vector = self.parameterAsOutputLayer(parameters, self.OUTPUT_VECTOR, context) or None
        _check_extension(out_raster, (".tif", ".tiff"), "class raster", "GeoTIFF")
        if out_vector:
            _check_extension(out_vector, (".gpkg",), "polygon output", "GeoPackage")
        try:
            # the selected features only when asked; any CRS (the engine reprojects them)
            mask = mask_from_parameter(self, parameters, self.MASK, context)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from exc
        try:
            source, reader = reader_for_layer(layer, rect, values["pixel_size"], card.gsd)
        except ValueError as exc:
            remove_mask(mask)
            raise QgsProcessingException(str(exc)) from exc
        self._card, self._reader, self._mask = card, reader, mask
        # the extent is in the layer's CRS, which is a provider reader's CRS too
        self._options = segment_options(
            values, input=source, output=out_raster, vector=out_vector, mask=mask,
            extent=_bounds(rect) if rect is not None else None)
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from .engine import engine_import
        from .masks import remove_mask
        Cancelled, segment = engine_import("inference", "Cancelled", "segment")

        options, reader, card = self._options, self._reader, self._card
        feedback.pushInfo(f"Model: {card.name} ({card.config.backbone}, "
                          f"{len(card.classes)} classes, {card.config.patch_size} px patches)")
        feedback.pushInfo(f"Input: {options.input}" + (" (read through the QGIS data provider)"
                                                       if reader is not None else ""))
        last = [""]

        def progress(fraction: float, message: str) -> None:
            feedback.setProgress(100.0 * max(0.0, min(1.0, fraction)))
            if message and message != last[0]:
                last[0] = message
                feedback.setProgressText(message)

        try:
            result = segment(options, progress=progress, is_cancelled=feedback.isCanceled,
                             reader=reader)
        except Cancelled as exc:
            raise QgsProcessingException("segmentation cancelled: no output was written") from exc
        except (ValueError, OSError, RuntimeError) as exc:
            raise QgsProcessingException(str(exc)) from exc
        finally:
            if reader is not None:
                reader.close()
            self._reader = None
            remove_mask(self._mask)
            self._mask = None

        feedback.pushInfo(f"Device: {result.device}")
        feedback.pushInfo(f"Grid: {result.width} x {result.height} px, {result.grid[0]} x "
                          f"{result.grid[1]} patches ({result.patches} in all)")
        feedback.pushInfo(f"Time: {result.seconds:.1f} s")
        from .engine import engine_import
        format_area = engine_import("ground", "format_area")

        feedback.pushInfo(f"Processing: {result.processing}")
        names = {c.id: c.name for c in card.classes}
        for cid, area in sorted(result.class_areas.items()):
            text = format_area(area) if result.area_unit == "m2" else f"{area:,.0f} pixels"
            feedback.pushInfo(f"  {names.get(cid, cid)}: {text}")

        legend = legend_from_card(card)
        for dest, name in ((options.output, RASTER_NAME), (options.vector, VECTOR_NAME)):
            if dest and context.willLoadLayerOnCompletion(dest):
                details = context.layerToLoadOnCompletionDetails(dest)
                details.name = name
                details.setPostProcessor(StylePostProcessor.create(legend))
        return {self.OUTPUT_RASTER: result.output, self.OUTPUT_VECTOR: result.vector,
                "DEVICE": result.device, "PATCHES": result.patches, "SECONDS": result.seconds}


def _bounds(rect) -> tuple[float, float, float, float]:
    return (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())


def _check_extension(path: str, allowed: tuple[str, ...], what: str, fmt: str) -> None:
    if Path(path).suffix.lower() not in allowed:
        raise QgsProcessingException(f"the {what} must be a {fmt} file ({' or '.join(allowed)}); "
                                     f"got {path}")
