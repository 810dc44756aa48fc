"""Polygon masks for the engine (``SegmentOptions.mask``): a QGIS feature source (a Processing
``MASK`` parameter, selected features only when asked) or a polygon layer of the dock, written to
a temporary GeoPackage in its own CRS (the engine reprojects it to the raster's). The caller
removes the file with :func:`remove_mask` once the run ended, whatever its outcome."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Iterable

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransformContext, QgsFeature,
                       QgsFields, QgsProcessingAlgorithm, QgsProcessingContext,
                       QgsProcessingUtils, QgsVectorFileWriter, QgsVectorLayer, QgsWkbTypes)

from .i18n import tr

log = logging.getLogger(__name__)

MASK_FILE = "fctl_mask.gpkg"


def write_mask(features: Iterable[QgsFeature], crs: QgsCoordinateReferenceSystem,
               wkb_type: int, what: str) -> str:
    """The polygons of ``features`` (in ``crs``) in a new temporary GeoPackage; its path.

    Raises:
        ValueError: no polygon to write (``what`` names the layer in the message), or the file
            cannot be written.
    """
    if QgsWkbTypes.geometryType(wkb_type) != QgsWkbTypes.GeometryType.PolygonGeometry:
        raise ValueError(tr("the mask {} is not a polygon layer: choose a polygon layer")
                         .format(what))
    path = QgsProcessingUtils.generateTempFilename(MASK_FILE)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "mask"
    writer = QgsVectorFileWriter.create(path, QgsFields(), QgsWkbTypes.multiType(wkb_type), crs,
                                        QgsCoordinateTransformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.WriterError.NoError:
        message = writer.errorMessage()
        del writer
        remove_mask(path)
        raise ValueError(tr("the mask could not be written to {} ({}): check the free space "
                            "of QGIS's temporary folder").format(path, message))
    count = 0
    for feat in features:
        if not feat.hasGeometry() or feat.geometry().isEmpty():
            continue
        out = QgsFeature()
        geom = feat.geometry()
        geom.convertToMultiType()
        out.setGeometry(geom)
        writer.addFeature(out)
        count += 1
    del writer   # closes the file
    if not count:
        remove_mask(path)
        raise ValueError(tr("the mask {} has no polygon (only selected features were asked for "
                            "and none is selected?): select polygons or use all features")
                         .format(what))
    log.info("mask: %d polygon(s) of %s written to %s", count, what, path)
    return path


def mask_from_parameter(alg: QgsProcessingAlgorithm, parameters: dict[str, Any], name: str,
                        context: QgsProcessingContext) -> str | None:
    """The Processing parameter ``name`` (a feature source, selected features only when the
    user ticked it) as a temporary GeoPackage; None when not given."""
    if parameters.get(name) in (None, ""):
        return None
    source = alg.parameterAsSource(parameters, name, context)
    if source is None:
        raise ValueError(tr("the mask layer could not be loaded: check its source"))
    return write_mask(source.getFeatures(), source.sourceCrs(), source.wkbType(),
                      source.sourceName() or name)


def mask_from_layer(layer: QgsVectorLayer, selected_only: bool) -> str:
    """The dock's polygon layer (its selected features when asked and some are selected) as a
    temporary GeoPackage."""
    feats = layer.getSelectedFeatures() if selected_only and layer.selectedFeatureCount() \
        else layer.getFeatures()
    return write_mask(feats, layer.crs(), layer.wkbType(), repr(layer.name()))


def remove_mask(path: str | None) -> None:
    """Remove a temporary mask (and the folder made for it); quiet when already gone."""
    if not path:
        return
    folder = Path(path).parent
    if folder.name and Path(path).name == MASK_FILE and \
            Path(QgsProcessingUtils.tempFolder()) in folder.parents:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
