"""A raster as QGIS draws it: a colour table's colours instead of its indices
(:mod:`.palette`), and a raster placed by GCPs or RPCs only warped onto a map grid
(:mod:`.warped`), in that order. Segmenting and training read rasters through this, so the
model sees, and the outputs lie, where the analyst saw the raster in the map.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

from .palette import expand_palette, is_paletted
from .warped import build_warped, placement


@contextmanager
def drawn_raster(path: str, folder: str | None = None, colours: bool = True) -> Iterator[str]:
    """The path to read ``path`` through: ``path`` itself, or a VRT written in ``folder`` (else
    a temporary folder removed on exit). ``colours``: expand a colour table (the model reads
    red, green, blue and no bands were named)."""
    from .reader import gdal_open

    if not os.path.isfile(path):   # a folder of tiles: the mosaic checks them
        yield path
        return
    ds = gdal_open(path)
    expand = colours and is_paletted(ds)
    how = placement(ds)
    ds = None
    if not expand and how is None:
        yield path
        return
    with temporary_folder(folder, "fctl-drawn-") as folder:
        view = path
        if expand:   # before the warp, which must interpolate colours, not indices
            view = expand_palette(view, os.path.join(folder, "colours.vrt"))
        if how is not None:
            view = build_warped(view, os.path.join(folder, "warped.vrt"), how)
        yield view


def temporary_folder(folder: str | None, prefix: str) -> ContextManager[str]:
    """``folder`` itself, or a temporary folder removed on exit."""
    if folder is not None:
        return nullcontext(folder)
    return tempfile.TemporaryDirectory(prefix=prefix, ignore_cleanup_errors=True)
