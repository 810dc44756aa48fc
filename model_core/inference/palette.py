"""Paletted rasters (one band of colour indices and a colour table) read as the colours QGIS
draws, not as indices.

An 8-bit paletted orthophoto (a GIF or PNG-8 export, an old compressed mosaic) stores an index
per pixel; its grey values mean nothing to a model that learnt red, green and blue. The colour
table is expanded to red, green, blue (and alpha, where the table or a nodata index makes pixels
transparent) through a GDAL VRT, before anything else reads the raster: warping GCPs, for one,
must interpolate colours, not indices.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

from .options import SegmentOptions

log = logging.getLogger(__name__)


def is_paletted(ds) -> bool:  # noqa: ANN001 (a gdal.Dataset)
    """One band of colour indices with an RGB colour table."""
    from osgeo import gdal

    if ds.RasterCount != 1:
        return False
    band = ds.GetRasterBand(1)
    table = band.GetColorTable()
    return (band.GetColorInterpretation() == gdal.GCI_PaletteIndex and table is not None
            and table.GetPaletteInterpretation() == gdal.GPI_RGB)


def expand_palette(path: str, vrt_path: str) -> str:
    """Write ``path``'s colours as an RGB(A) VRT at ``vrt_path``; returns it."""
    from osgeo import gdal

    from .reader import gdal_open

    ds = gdal_open(path)
    band = ds.GetRasterBand(1)
    table = band.GetColorTable()
    # GDAL's RGBA expansion gives the nodata index alpha 0, and the table's own alphas
    transparent = band.GetNoDataValue() is not None or any(
        table.GetColorEntry(i)[3] < 255 for i in range(table.GetCount()))
    expand = "rgba" if transparent else "rgb"
    out = gdal.Translate(str(vrt_path), ds, options=gdal.TranslateOptions(
        format="VRT", rgbExpand=expand))
    if out is None:
        raise ValueError(f"GDAL could not expand the colour table of {path} "
                         f"({gdal.GetLastErrorMsg()}): export it as RGB first "
                         "(gdal_translate -expand rgb)")
    out = None
    log.info("%s is paletted (one band of colour indices): its colour table is expanded to %s, "
             "as QGIS draws it", path, "red, green, blue and alpha" if transparent
             else "red, green, blue")
    return str(vrt_path)


@contextmanager
def palette_input(options: SegmentOptions, folder: str | None = None, rgb: bool = True
                  ) -> Iterator[SegmentOptions]:
    """``options`` with a paletted input replaced by its expanded VRT (written in ``folder``,
    else a temporary folder removed on exit) when the model reads red, green, blue (``rgb``:
    its bands are 1, 2, 3); other inputs, and runs that name their bands (``--bands``: the
    indices are wanted), unchanged."""
    from .reader import gdal_open

    if not rgb or options.bands or not os.path.isfile(options.input) \
            or not is_paletted(gdal_open(options.input)):
        yield options
        return
    tmp = None
    if folder is None:
        folder = tmp = tempfile.mkdtemp(prefix="fctl-palette-")
    try:
        vrt = expand_palette(options.input, os.path.join(folder, "colours.vrt"))
        yield dataclasses.replace(options, input=vrt)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
