"""Inputs shared by ``fctl:train`` and ``fctl:evaluate``: the raster's file, the labels (any
vector layer is exported to a GeoPackage the engine reads; label rasters by path), the extent in
the raster's CRS, and the engine's errors as Processing errors."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessing,
                       QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingParameterBand, QgsProcessingParameterEnum,
                       QgsProcessingParameterExtent, QgsProcessingParameterField,
                       QgsProcessingParameterMapLayer, QgsProcessingParameterRasterLayer,
                       QgsProcessingUtils, QgsRasterLayer, QgsVectorFileWriter, QgsVectorLayer,
                       QgsWkbTypes)

from .engine import engine_import
from .i18n import tr

INPUT = "INPUT"
BANDS = "BANDS"
LABELS = "LABELS"
CLASS_FIELD = "CLASS_FIELD"
EXTENT = "EXTENT"
DEVICE = "DEVICE"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def add_input_parameters(alg: QgsProcessingAlgorithm) -> None:
    """INPUT, BANDS, LABELS, CLASS_FIELD, EXTENT: the same for both algorithms."""
    p = QgsProcessingParameterRasterLayer(INPUT, tr("Raster layer"))
    p.setHelp(tr("The imagery, read as fctl:segment reads it (bands, scaling)."))
    alg.addParameter(p)
    p = QgsProcessingParameterBand(BANDS, tr("Bands (empty = the model's)"), None, INPUT,
                                   optional=True, allowMultiple=True)
    alg.addParameter(p)
    p = QgsProcessingParameterMapLayer(LABELS, tr("Labels (polygon layer or label raster)"),
                                       types=[QgsProcessing.SourceType.TypeVectorPolygon,
                                              QgsProcessing.SourceType.TypeRaster])
    alg.addParameter(p)
    p = QgsProcessingParameterField(CLASS_FIELD, tr("Class field (empty = one class)"),
                                    parentLayerParameterName=LABELS, optional=True)
    alg.addParameter(p)
    alg.addParameter(QgsProcessingParameterExtent(EXTENT, tr("Area (empty = the labels' "
                                                             "extent)"), optional=True))


def device_parameter() -> QgsProcessingParameterEnum:
    return QgsProcessingParameterEnum(DEVICE, tr("Device"), options=list(DEVICES),
                                      defaultValue=0)


def raster_path(alg: QgsProcessingAlgorithm, parameters: dict[str, Any],
                context: QgsProcessingContext) -> tuple[QgsRasterLayer, str]:
    layer = alg.parameterAsRasterLayer(parameters, INPUT, context)
    if layer is None or not layer.isValid():
        raise QgsProcessingException(tr("the input raster layer could not be loaded: check its "
                                        "path or source"))
    if layer.providerType() != "gdal" or not Path(layer.source().split("|")[0]).exists():
        raise QgsProcessingException(tr("training and evaluation read raster files: save the "
                                        "layer as a GeoTIFF (Export > Save As) and use that"))
    return layer, layer.source().split("|")[0]


def extent_in_raster_crs(alg: QgsProcessingAlgorithm, parameters: dict[str, Any],
                         context: QgsProcessingContext, layer: QgsRasterLayer
                         ) -> tuple[tuple[float, float, float, float] | None, str | None]:
    if parameters.get(EXTENT) in (None, ""):
        return None, None
    rect = alg.parameterAsExtent(parameters, EXTENT, context, layer.crs())
    if rect.isNull() or rect.isEmpty():
        return None, None
    wkt = layer.crs().toWkt(QgsCoordinateReferenceSystem.WktVariant.WKT_PREFERRED) \
        if layer.crs().isValid() else None
    return (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()), wkt


class LabelExport:
    """The LABELS layer as a file the engine reads; ``close()`` removes what was exported."""

    def __init__(self, alg: QgsProcessingAlgorithm, parameters: dict[str, Any],
                 context: QgsProcessingContext) -> None:
        LabelSource = engine_import("training.gis", "LabelSource")

        self.folder: str | None = None
        layer = alg.parameterAsLayer(parameters, LABELS, context)
        if layer is None or not layer.isValid():
            raise QgsProcessingException(tr("the labels layer could not be loaded: give a "
                                            "polygon layer or a label raster"))
        field = alg.parameterAsString(parameters, CLASS_FIELD, context).strip() or None
        self.layer_name = layer.name()
        if isinstance(layer, QgsRasterLayer):
            if layer.providerType() != "gdal":
                raise QgsProcessingException(tr("label rasters are read from files: save the "
                                                "label layer as a GeoTIFF first"))
            self.source = LabelSource(layer.source().split("|")[0], name=layer.name())
            return
        if not isinstance(layer, QgsVectorLayer) or \
                layer.geometryType() != QgsWkbTypes.GeometryType.PolygonGeometry:
            raise QgsProcessingException(tr("the labels must be polygons or a label raster"))
        attrs = []
        if field:
            index = layer.fields().indexOf(field)
            if index < 0:
                raise QgsProcessingException(
                    tr("the labels layer has no field {0}; its fields are {1}").format(
                        field, ", ".join(layer.fields().names())))
            attrs = [index]
        self.folder = tempfile.mkdtemp(prefix="fctl_labels_", dir=QgsProcessingUtils.tempFolder())
        path = str(Path(self.folder) / "labels.gpkg")
        opts = QgsVectorFileWriter.SaveVectorOptions()
        opts.driverName = "GPKG"
        opts.layerName = "labels"
        opts.attributes = attrs
        res = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context.transformContext(),
                                                        opts)
        if res[0] != QgsVectorFileWriter.WriterError.NoError:
            self.close()
            raise QgsProcessingException(tr("the labels could not be read: {0}").format(res[1]))
        self.source = LabelSource(path, layer="labels", field=field, name=layer.name())

    def close(self) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def progress_reporter(feedback):
    """(fraction, message) -> the feedback's bar and text; epoch lines into the log."""
    last = [""]

    def report(fraction: float, message: str) -> None:
        feedback.setProgress(100.0 * max(0.0, min(1.0, fraction)))
        if message and message != last[0]:
            last[0] = message
            feedback.setProgressText(message)
            if not message.startswith("step "):
                feedback.pushInfo(message)

    return report
