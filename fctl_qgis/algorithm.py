"""``fctl:segment``: semantic segmentation of a raster layer with an FCtL model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qgis.core import (QgsProcessing, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputNumber,
                       QgsProcessingOutputString, QgsProcessingParameterBand,
                       QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterExtent,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterDestination,
                       QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination)
from qgis.PyQt.QtGui import QIcon

from .styling import LegendClass, legend_from_card, style_layer

log = logging.getLogger(__name__)

DEVICES = ["auto", "cpu", "cuda"]
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


class SegmentAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    BANDS = "BANDS"
    EXTENT = "EXTENT"
    PIXEL_SIZE = "PIXEL_SIZE"
    DEVICE = "DEVICE"
    BATCH_SIZE = "BATCH_SIZE"
    TTA = "TTA"
    SHARED_CONTEXT = "SHARED_CONTEXT"
    MIN_AREA = "MIN_AREA"
    OUTPUT_RASTER = "OUTPUT_RASTER"
    OUTPUT_VECTOR = "OUTPUT_VECTOR"

    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:  # noqa: N802
        return "Segment raster (FCtL)"

    def shortHelpString(self) -> str:  # noqa: N802
        return ("Classifies every pixel of an ultra-high-resolution raster with an FCtL model "
                "(local patch + medium and large contexts fused by locality-aware attention). "
                "Writes a class raster (GeoTIFF) and optionally class polygons (GeoPackage), "
                "styled with the model's class colours and names.\n\n"
                "MODEL: a .safetensors FCtL checkpoint; empty = the bundled default model.\n"
                "BANDS: raster bands fed to the network in order; empty = the model's bands.\n"
                "EXTENT: process only this area (any CRS; reprojected to the layer's).\n"
                "PIXEL SIZE: resample to this pixel size (layer units); 0 = native. Needed for "
                "web layers (XYZ/WMS) without a native resolution.\n"
                "MIN_AREA: polygons smaller than this (square map units) are merged into "
                "their neighbours.\n"
                "BATCH SIZE: 0 = automatic (8 on a GPU; on CPU 4 for FCtL models, whose context "
                "fusion runs faster in batches, 1 for models without contexts).\n"
                "FAST CONTEXT: encode the medium context once per area of the raster instead of "
                "once per patch: about 1.2-1.5x faster on large rasters; labels differ from "
                "the per-patch contexts in about 1 % of pixels (same accuracy on DeepGlobe).")

    def createInstance(self) -> "SegmentAlgorithm":  # noqa: N802
        return SegmentAlgorithm()

    def icon(self) -> QIcon:
        from .provider import icon_path

        return QIcon(icon_path())

    def initAlgorithm(self, config: dict | None = None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model checkpoint (empty = bundled default)",
            behavior=QgsProcessingParameterFile.File, extension="safetensors", optional=True))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, "Bands fed to the network (empty = the model's)", None, self.INPUT,
            optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Area to segment",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES,
                                                     defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Patches per batch (0 = automatic)",
            QgsProcessingParameterNumber.Integer, defaultValue=0, minValue=0, maxValue=256))
        self.addParameter(QgsProcessingParameterBoolean(
            self.TTA, "Test-time augmentation (8 flips/rotations, 8x slower)", defaultValue=False))
        self.addParameter(QgsProcessingParameterBoolean(
            self.SHARED_CONTEXT, "Fast context (medium context shared across patches)",
            defaultValue=False))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, "Minimum polygon area (square map units, 0 = keep all)",
            QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0))
        pixel = QgsProcessingParameterNumber(
            self.PIXEL_SIZE, "Pixel size (layer units, 0 = native resolution)",
            QgsProcessingParameterNumber.Double, defaultValue=0.0, minValue=0.0, optional=True)
        pixel.setFlags(pixel.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(pixel)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_RASTER,
                                                                  "Classes"))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_VECTOR, "Class polygons", QgsProcessing.TypeVectorPolygon,
            optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputString("DEVICE", "Device used"))
        self.addOutput(QgsProcessingOutputNumber("PATCHES", "Patches processed"))
        self.addOutput(QgsProcessingOutputNumber("SECONDS", "Run time (s)"))

    # ------------------------------------------------------------------ run
    def prepareAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> bool:
        """Main thread: resolve the layer, model card and reader (a provider clone) here."""
        from model_core.checkpoint import DEFAULT_MODEL, CheckpointError, read_card
        from model_core.inference import SegmentOptions

        from .qgis_reader import reader_for_layer

        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException("the input raster layer could not be loaded: check its "
                                         "path or source")
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        try:
            card = read_card(model or DEFAULT_MODEL)
        except CheckpointError as exc:
            raise QgsProcessingException(str(exc)) from exc
        rect = None
        if parameters.get(self.EXTENT) not in (None, ""):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if rect.isNull() or rect.isEmpty():
                rect = None
        pixel_size = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context) or None
        out_raster = self.parameterAsOutputLayer(parameters, self.OUTPUT_RASTER, context)
        out_vector = self.parameterAsOutputLayer(parameters, self.OUTPUT_VECTOR, context) or None
        _check_extension(out_raster, (".tif", ".tiff"), "class raster", "GeoTIFF")
        if out_vector:
            _check_extension(out_vector, (".gpkg",), "polygon output", "GeoPackage")
        try:
            source, reader = reader_for_layer(layer, rect, pixel_size)
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from exc
        self._card, self._reader = card, reader
        self._options = SegmentOptions(
            input=source, output=out_raster, vector=out_vector, model=model,
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            tta=self.parameterAsBool(parameters, self.TTA, context),
            shared_context=self.parameterAsBool(parameters, self.SHARED_CONTEXT, context),
            # a provider reader's grid is already the requested extent
            extent=_bounds(rect) if rect is not None and reader is None else None,
            bands=self.parameterAsInts(parameters, self.BANDS, context) or None,
            min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            min_area_unit="map")
        return True

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,  # noqa: N802
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from model_core.inference import Cancelled, segment

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

        feedback.pushInfo(f"Device: {result.device}")
        feedback.pushInfo(f"Grid: {result.width} x {result.height} px, {result.grid[0]} x "
                          f"{result.grid[1]} patches ({result.patches} in all)")
        feedback.pushInfo(f"Time: {result.seconds:.1f} s")
        names = {c.id: c.name for c in card.classes}
        for cid, area in sorted(result.class_areas.items()):
            feedback.pushInfo(f"  {names.get(cid, cid)}: {area:.1f} square map units")

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
