"""Streaming inference over any GDAL raster: :func:`segment` and its contract.

``segment(SegmentOptions(input, output, ...))`` reads the raster through GDAL windows, runs the
FCtL network patch by patch with its medium and large contexts, merges the overlapping logits in
bounded memory and writes a classified GeoTIFF (and optional class polygons). Pass ``reader=`` to
read through another :class:`WindowReader`, and ``model=``/``card=`` to run an already loaded
model (anything following :class:`SegmentationModel`).
"""

from .engine import resolve_bands, segment
from .options import Cancelled, SegmentOptions, SegmentResult
from .protocol import SegmentationModel
from .reader import GdalReader, WindowReader
from .writers import NODATA

__all__ = ["segment", "SegmentOptions", "SegmentResult", "Cancelled", "WindowReader",
           "GdalReader", "SegmentationModel", "NODATA", "resolve_bands"]
