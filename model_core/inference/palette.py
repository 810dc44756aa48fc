"""Paletted rasters (one band of colour indices and a colour table) read as the colours QGIS
draws, not as indices.

An 8-bit paletted orthophoto (a GIF or PNG-8 export, an old compressed mosaic) stores an index
per pixel; its grey values mean nothing to a model that learnt red, green and blue. The colour
table is expanded to red, green, blue (and alpha, where the table or a nodata index makes pixels
transparent) through a GDAL VRT, before anything else reads the raster: warping GCPs, for one,
must interpolate colours, not indices.
"""

from __future__ import annotations

import logging

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


def colour_table(ds) -> list[tuple[int, ...]]:  # noqa: ANN001 (a gdal.Dataset)
    """The entries of band 1's colour table."""
    table = ds.GetRasterBand(1).GetColorTable()
    return [tuple(table.GetColorEntry(i)) for i in range(table.GetCount())]


def expand_palette(path: str, vrt_path: str, alpha: bool | None = None) -> str:
    """Write ``path``'s colours as an RGB(A) VRT at ``vrt_path``; returns it. ``alpha``: always
    (True) or never (False) an alpha band; None: where the table or nodata makes pixels
    transparent."""
    from osgeo import gdal

    from .reader import gdal_open

    ds = gdal_open(path)
    band = ds.GetRasterBand(1)
    table = band.GetColorTable()
    # GDAL's RGBA expansion gives the nodata index alpha 0, and the table's own alphas
    transparent = alpha if alpha is not None else band.GetNoDataValue() is not None or any(
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
