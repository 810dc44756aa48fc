"""The classified GeoTIFF: uint8 class ids, tiled and DEFLATE-compressed, with the model's colour
table and category names, nodata = 255 (:data:`NODATA`) where the input had no valid pixel.

Results over :data:`OVERVIEW_MIN_SIZE` px get internal overviews (:func:`add_overviews`). It is
written to ``<output>.part`` next to the output and renamed into place only by
:meth:`ClassRasterWriter.commit`; :meth:`ClassRasterWriter.abort` removes it. GDAL keeps the
category names in a ``.aux.xml`` side file, which follows the raster.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..checkpoint import ClassInfo

log = logging.getLogger(__name__)

NODATA = 255
CREATION_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"]
OVERVIEW_MIN_SIZE = 512     # px on the longer side: smaller results get no overviews
OVERVIEW_SMALLEST = 256     # halve until the smallest level's longer side is at most this


def part_path(path: str | Path, suffix: str = ".part") -> Path:
    """The temporary sibling of ``path`` a run writes before renaming it into place."""
    path = Path(path)
    return path.with_name(path.name + suffix)


def aux_path(path: str | Path) -> Path:
    return Path(str(path) + ".aux.xml")


def remove_quietly(*paths: str | Path) -> None:
    for p in paths:
        for q in (Path(p), aux_path(p)):
            try:
                q.unlink(missing_ok=True)
            except OSError as exc:  # keep the original error; say what could not be removed
                log.warning("could not remove %s: %s", q, exc)


class ClassRasterWriter:
    """Writes label windows into the temporary GeoTIFF of ``path``.

    Args:
        path: final output path.
        width, height: output size in pixels.
        geotransform: of the output (None: the input had none).
        crs_wkt: CRS of the output ('' for none).
        classes: the model's classes (colour table and category names).
    """

    def __init__(self, path: str | Path, width: int, height: int,
                 geotransform: Sequence[float] | None, crs_wkt: str,
                 classes: Sequence[ClassInfo]) -> None:
        from osgeo import gdal

        self.path = Path(path)
        self.tmp = part_path(self.path)
        remove_quietly(self.tmp)
        driver = gdal.GetDriverByName("GTiff")
        gdal.PushErrorHandler("CPLQuietErrorHandler")
        try:
            ds = driver.Create(str(self.tmp), int(width), int(height), 1, gdal.GDT_Byte,
                               options=CREATION_OPTIONS)
        finally:
            gdal.PopErrorHandler()
        if ds is None:
            raise PermissionError(f"cannot create {self.tmp}: {gdal.GetLastErrorMsg()} (is the "
                                  "output folder writable and is there free space?)")
        self._ds = ds
        if geotransform is not None:
            ds.SetGeoTransform(tuple(float(v) for v in geotransform))
        if crs_wkt:
            ds.SetProjection(crs_wkt)
        band = ds.GetRasterBand(1)
        band.SetNoDataValue(NODATA)
        band.SetColorTable(color_table(classes))
        band.SetCategoryNames(category_names(classes))
        band.SetColorInterpretation(gdal.GCI_PaletteIndex)
        self._band = band

    def write(self, x: int, y: int, labels: np.ndarray) -> None:
        """Write ``labels`` (h, w) uint8 at output pixel (x, y)."""
        from osgeo import gdal

        if self._band.WriteArray(labels, int(x), int(y)) != gdal.CE_None:
            raise OSError(f"writing {self.tmp} failed: {gdal.GetLastErrorMsg()} (disk full?)")

    def close(self) -> None:
        """Flush and close the temporary file (it stays temporary)."""
        if self._ds is not None:
            self._ds.FlushCache()
            self._band = None
            self._ds = None

    def commit(self) -> Path:
        """Close and move the temporary file (and its .aux.xml) into place.

        The raster moves first: when that fails nothing at ``path`` has changed (the caller's
        :meth:`abort` removes the temporary pair); when its side file then fails to follow, the
        half-published pair is removed rather than left with another run's categories.
        """
        self.close()
        final_aux = aux_path(self.path)
        os.replace(self.tmp, self.path)
        try:
            if aux_path(self.tmp).exists():
                os.replace(aux_path(self.tmp), final_aux)
            else:
                final_aux.unlink(missing_ok=True)
        except BaseException:
            remove_quietly(self.path)
            raise
        return self.path

    def abort(self) -> None:
        """Close and remove the temporary file."""
        self._band = None
        self._ds = None
        remove_quietly(self.tmp)


def add_overviews(path: str | Path, is_cancelled: Callable[[], bool] | None = None) -> int:
    """Build internal overviews (mode of the class ids, so every level holds real ids and
    nodata) into the GeoTIFF ``path`` when it is larger than :data:`OVERVIEW_MIN_SIZE`, halving
    until the smallest level fits :data:`OVERVIEW_SMALLEST`: a 20,000 px result then pans
    smoothly in QGIS. GDAL works block by block (memory bounded by its block cache). Returns
    the number of levels; 0 when the raster is small or ``is_cancelled()`` turned True (the
    caller raises the cancellation)."""
    from osgeo import gdal

    ds = gdal.Open(str(path), gdal.GA_Update)
    if ds is None:
        raise OSError(f"cannot open {path} to add overviews: {gdal.GetLastErrorMsg()}")
    size = max(ds.RasterXSize, ds.RasterYSize)
    if size <= OVERVIEW_MIN_SIZE:
        return 0
    levels = []
    while size / 2 ** len(levels) > OVERVIEW_SMALLEST:
        levels.append(2 ** (len(levels) + 1))

    def progress(fraction, message, data) -> int:
        return 0 if is_cancelled is not None and is_cancelled() else 1

    # the overviews take the file's DEFLATE compression
    with _config({"COMPRESS_OVERVIEW": "DEFLATE", "GDAL_TIFF_OVR_BLOCKSIZE": "256"}):
        err = ds.BuildOverviews("MODE", levels, progress)
    ds = None
    if err != gdal.CE_None:
        if is_cancelled is not None and is_cancelled():
            return 0
        raise OSError(f"building the overviews of {path} failed: {gdal.GetLastErrorMsg()} "
                      "(disk full?)")
    return len(levels)


@contextmanager
def _config(options: dict[str, str]) -> Iterator[None]:
    """GDAL configuration options set for this thread only, restored afterwards."""
    from osgeo import gdal

    old = {k: gdal.GetThreadLocalConfigOption(k, None) for k in options}
    for k, v in options.items():
        gdal.SetThreadLocalConfigOption(k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            gdal.SetThreadLocalConfigOption(k, v)


def color_table(classes: Sequence[ClassInfo]):
    """GDAL colour table: each class's colour, transparent nodata, grey for unused ids."""
    from osgeo import gdal

    ct = gdal.ColorTable()
    by_id = {c.id: c for c in classes}
    for i in range(max(by_id, default=-1) + 1):
        rgb = by_id[i].color if i in by_id else (128, 128, 128)
        ct.SetColorEntry(i, (*(int(v) for v in rgb), 255))
    ct.SetColorEntry(NODATA, (0, 0, 0, 0))
    return ct


def category_names(classes: Sequence[ClassInfo]) -> list[str]:
    """Category names indexed by class id ('' for unused ids)."""
    by_id = {c.id: c for c in classes}
    return [by_id[i].name if i in by_id else "" for i in range(max(by_id, default=-1) + 1)]
