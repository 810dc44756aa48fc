"""The Processing provider ``fctl`` ("FCtL segmentation")."""

from __future__ import annotations

import logging

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import deps
from .bootstrap import resources_dir

log = logging.getLogger(__name__)

PROVIDER_ID = "fctl"


def icon_path() -> str:
    return str(resources_dir() / "icons" / "fctl.svg")


class FCtLProvider(QgsProcessingProvider):
    """Offers ``fctl:segment`` when torch, timm and safetensors import; nothing otherwise (the
    dock then explains what is missing)."""

    def id(self) -> str:  # noqa: A003 - QGIS API
        return PROVIDER_ID

    def name(self) -> str:
        return "FCtL segmentation"

    def longName(self) -> str:  # noqa: N802
        status = deps.check()
        if status.ok:
            return "FCtL segmentation of ultra-high-resolution imagery"
        return "FCtL segmentation (missing: " + ", ".join(status.missing) + ")"

    def icon(self) -> QIcon:
        return QIcon(icon_path())

    def svgIconPath(self) -> str:  # noqa: N802
        return icon_path()

    def supportedOutputRasterLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802
        return ["gpkg"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:  # noqa: N802,N803
        return "gpkg"

    def defaultRasterFileExtension(self) -> str:  # noqa: N802
        return "tif"

    def loadAlgorithms(self) -> None:  # noqa: N802
        status = deps.check()
        if not status.ok:
            log.warning("FCtL algorithms unavailable: %s", status.message())
            return
        from .algorithm import SegmentAlgorithm

        self.addAlgorithm(SegmentAlgorithm())
        from .train_algorithms import EvaluateAlgorithm, TrainAlgorithm

        self.addAlgorithm(TrainAlgorithm())
        self.addAlgorithm(EvaluateAlgorithm())
