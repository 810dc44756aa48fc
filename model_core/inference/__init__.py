"""Streaming inference over any GDAL raster: :func:`segment` and its contract.

``segment(SegmentOptions(input, output, ...))`` reads the raster through GDAL windows, runs the
FCtL network patch by patch with its medium and large contexts, merges the overlapping logits in
bounded memory and writes a classified GeoTIFF (and optional class polygons). Pass ``reader=`` to
read through another :class:`WindowReader`, and ``model=``/``card=`` to run an already loaded
model (anything following :class:`SegmentationModel`).

The engine (torch, GDAL) is imported on first use: the options and their table
(:mod:`.option_table`) import without torch, so the QGIS plugin can build its panels before
its dependencies are installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from .options import Cancelled, SegmentOptions, SegmentResult

# name -> submodule that defines it, imported when the name is first used
_LAZY = {"segment": ".engine", "resolve_bands": ".engine", "SegmentationModel": ".protocol",
         "GdalReader": ".reader", "WindowReader": ".reader", "NODATA": ".writers"}

__all__ = ["segment", "SegmentOptions", "SegmentResult", "Cancelled", "WindowReader",
           "GdalReader", "SegmentationModel", "NODATA", "resolve_bands"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
