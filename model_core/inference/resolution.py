"""Processing resolution: run the model at the pixel size it was trained for.

A model sees the ground through patches of a fixed number of pixels; at another pixel size the
same patch covers other ground (a 0.1 m orthophoto through a 0.5 m model shows it a twenty-fifth
of the area it learnt from), and its output is mostly wrong. By default (``pixel_size="auto"``)
the engine therefore reads a raster whose pixel size differs from the model card's ``gsd`` by more
than :data:`TOLERANCE` through a GDAL VRT at the model's pixel size: area averaging when
reducing, cubic when enlarging (sharper than bilinear: 1 m imagery enlarged to 0.5 m agreed
with the 0.5 m run on 52 % of the sample's pixels with cubic, 47 % with bilinear), the same
ground extent (the pixel size is adjusted by under a pixel's share so that the extent stays
exact). Patches, contexts and merging run on that grid.

The labels are written on the input's grid by default (``output_grid="input"``, nearest
neighbour: the classes line up pixel for pixel with the input, for raster calculators and zonal
statistics), or on the processing grid (``output_grid="processing"``: the model's resolution,
smaller when the input is finer). Polygons always come from the processing grid.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..ground import ground_of

log = logging.getLogger(__name__)

TOLERANCE = 0.15   # pixel sizes within 15 % of the model's run natively
OUTPUT_GRIDS = ("input", "processing")


@dataclass
class Resolution:
    """How a run treats the raster's pixel size."""

    raster_m: float | None          # the input's pixel size on the ground (None: unknown)
    target_m: float | None          # the processing pixel size (None: native)
    width: int                      # processing grid size
    height: int
    reason: str                     # one sentence for the log and the metadata
    input_gt: tuple | None = None   # the input raster's grid (for output_grid="input")
    input_size: tuple[int, int] = (0, 0)
    vrt: str | None = None          # the VRT the engine reads when resampled

    @property
    def resampled(self) -> bool:
        return self.vrt is not None

    @property
    def factor(self) -> float:
        """Processing pixel size / input pixel size (> 1: the model sees fewer pixels)."""
        if not self.resampled or not self.raster_m or not self.target_m:
            return 1.0
        return self.target_m / self.raster_m


def parse_pixel_size(value: str | float | None) -> str | float:
    """``auto`` (the model's), ``native`` or a size in metres (> 0); 0 and None mean auto."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("auto", "native"):
            return v
        try:
            value = float(v)
        except ValueError:
            raise ValueError(f"pixel size {value!r}: give auto, native or a size in metres "
                             "(for example 0.5)") from None
    if value == 0:
        return "auto"
    if not value > 0 or not math.isfinite(value):
        raise ValueError(f"pixel size {value} must be a positive size in metres, auto or native")
    return float(value)


def plan_resolution(path: str, width: int, height: int, geotransform: Sequence[float] | None,
                    crs_wkt: str, pixel_size: str | float | None, model_gsd: float | None
                    ) -> Resolution:
    """Decide the processing grid of ``path`` (opened elsewhere) for a run."""
    want = parse_pixel_size(pixel_size)
    ground = ground_of(geotransform, crs_wkt, width, height)
    raster_m = ground.pixel_size_m

    gt = tuple(geotransform) if geotransform is not None else None

    def native(reason: str) -> Resolution:
        return Resolution(raster_m, None, width, height, reason, gt, (width, height))

    if want == "native":
        return native("native resolution (asked for)")
    target = model_gsd if want == "auto" else want
    if target is None:
        log.warning("the model's card gives no pixel size (gsd): the raster runs at its native "
                    "resolution; give --pixel-size in metres if it differs from the training "
                    "imagery's")
        return native("native resolution (the model records no pixel size)")
    if raster_m is None:
        # a world file without .prj/.aux.xml gives a grid in unknown units: say which is missing
        what = "no georeferencing" if gt is None else "no CRS"
        if want != "auto":
            raise ValueError(f"{path} has {what}: its pixel size on the ground is unknown, so "
                             f"it cannot be resampled to {target:g} m; use --pixel-size native, "
                             "or georeference it" + ("" if gt is None else " (assign its CRS)"))
        log.warning("%s has %s: its pixel size is unknown, so it runs at native resolution (the "
                    "model was trained at %g m per pixel)", path, what, target)
        return native(f"native resolution ({what})")
    ratio = target / raster_m
    if want == "auto" and abs(ratio - 1) <= TOLERANCE:
        return native(f"native resolution ({raster_m:.3g} m, within {TOLERANCE:.0%} of the "
                      f"model's {target:g} m)")
    new_w, new_h = max(1, round(width / ratio)), max(1, round(height / ratio))
    if new_w * new_h > 4e10:
        raise ValueError(f"processing {path} at {target:g} m per pixel would need a "
                         f"{new_w} x {new_h} grid: choose a coarser --pixel-size")
    how = "averaged" if ratio > 1 else "cubic"
    reason = (f"resampled from {raster_m:.3g} m to {target:.3g} m per pixel "
              f"({'the model' if want == 'auto' else 'asked for'}; {how})")
    return Resolution(raster_m, target, new_w, new_h, reason, gt, (width, height))


def open_vrt(path: str, res: Resolution, overviews: bool) -> str:
    """Write the processing grid of ``path`` as an in-memory VRT; returns its path."""
    from osgeo import gdal

    from .reader import gdal_open

    src = gdal_open(path, overviews=overviews)
    vrt = f"/vsimem/fctl_{uuid.uuid4().hex}.vrt"
    alg = "average" if res.target_m and res.raster_m and res.target_m > res.raster_m \
        else "cubic"
    out = gdal.Translate(vrt, src, format="VRT", width=res.width, height=res.height,
                         resampleAlg=alg)
    if out is None:
        raise OSError(f"cannot build the resampled view of {path}: {gdal.GetLastErrorMsg()}")
    out = src = None
    res.vrt = vrt
    return vrt


def close_vrt(res: Resolution) -> None:
    if res.vrt:
        from osgeo import gdal

        gdal.Unlink(res.vrt)


def to_input_grid(tmp: Path, input_gt: Sequence[float], input_size: tuple[int, int],
                  window_gt: Sequence[float], window_size: tuple[int, int],
                  valid: Callable[[int, int, int, int], np.ndarray] | None = None
                  ) -> tuple[int, int, tuple]:
    """Resample the labels in ``tmp`` (the processing grid's window ``window_gt``,
    ``window_size``) onto the input raster's grid (nearest neighbour), in place; returns the
    new size and geotransform.

    The input grid's cells nearest to the window's corners are kept, so the result is a window
    of the input raster's own grid (same origin, pixel size and rotation: the corners are found
    in the input's pixel space, and GDAL's warper follows any affine geotransform).

    ``valid(xoff, yoff, xsize, ysize)``: the input's own mask of a window (True = data). Cells
    it marks as nodata become nodata: a processing pixel that straddles the edge of the data is
    valid (GDAL's resampling fills it from the valid side), and would otherwise give its class
    to the input's nodata cells under it."""
    from osgeo import gdal

    from .plan import map_to_pixel, window_geotransform
    from .writers import CREATION_OPTIONS, NODATA, remove_quietly

    ww, wh = window_size
    g = window_gt
    c0f, r0f = map_to_pixel(tuple(input_gt), g[0], g[3])
    c1f, r1f = map_to_pixel(tuple(input_gt), g[0] + ww * g[1] + wh * g[2],
                             g[3] + ww * g[4] + wh * g[5])
    c0, r0 = max(0, round(min(c0f, c1f))), max(0, round(min(r0f, r1f)))
    c1 = min(input_size[0], round(max(c0f, c1f)))
    r1 = min(input_size[1], round(max(r0f, r1f)))
    w, h = max(1, c1 - c0), max(1, r1 - r0)
    gt = window_geotransform(tuple(input_gt), c0, r0)
    warped = tmp.with_name(tmp.name + ".grid")
    src = gdal.Open(str(tmp))
    dst = None
    try:
        dst = gdal.GetDriverByName("GTiff").Create(str(warped), w, h, 1, gdal.GDT_Byte,
                                                   CREATION_OPTIONS)
        if dst is None:
            raise OSError(f"cannot write {warped}: {gdal.GetLastErrorMsg()}")
        dst.SetGeoTransform(gt)
        dst.SetProjection(src.GetProjection())
        band = dst.GetRasterBand(1)
        band.SetNoDataValue(NODATA)
        # INIT_DEST: cells outside the labels start as nodata in the warper's own buffers,
        # without a separate pass writing the whole file
        if gdal.Warp(dst, src, resampleAlg="near", srcNodata=NODATA, dstNodata=NODATA,
                     warpOptions=["INIT_DEST=NO_DATA"]) is None:
            raise OSError(f"cannot write {warped}: {gdal.GetLastErrorMsg()}")
        if valid is not None:
            _mask_cells(band, valid, c0, r0, w, h)
        ct = src.GetRasterBand(1).GetColorTable()
        if ct is not None:
            band.SetColorTable(ct)
        dst.SetMetadata(src.GetMetadata())
        band = dst = src = None
        Path(warped).replace(tmp)   # the category names stay in tmp's .aux.xml
    finally:
        band = dst = src = None
        remove_quietly(warped)
    return w, h, gt


def _mask_cells(band, valid: Callable[[int, int, int, int], np.ndarray], c0: int, r0: int,
                w: int, h: int, rows: int = 1024) -> None:  # noqa: ANN001 (a gdal.Band)
    """Set NODATA in ``band`` (the input grid's window at c0, r0) where ``valid`` says the input
    has none, a strip of ``rows`` at a time."""
    from .writers import NODATA

    for y in range(0, h, rows):
        n = min(rows, h - y)
        ok = valid(c0, r0 + y, w, n)
        if ok.all():
            continue
        labels = band.ReadAsArray(0, y, w, n)
        labels[~ok] = NODATA
        band.WriteArray(labels, 0, y)
