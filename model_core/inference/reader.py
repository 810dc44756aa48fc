"""Window readers: the only way the engine touches raster pixels.

:class:`WindowReader` is the interface; :class:`GdalReader` (GDAL datasets by path) implements it
here, and the QGIS plugin implements it over a layer's data provider for sources GDAL cannot open
by path (XYZ, WMS, ...). Readers never modify their source.
"""

from __future__ import annotations

import abc
import logging
from typing import Sequence

import numpy as np

from .decimate import BoxDecimation

log = logging.getLogger(__name__)


class WindowReader(abc.ABC):
    """Read-only access to rectangular windows of a raster.

    Attributes:
        width, height: raster size in pixels.
        band_count: number of bands.
        geotransform: GDAL geotransform (x0, dx, rx, y0, ry, dy).
        crs_wkt: the CRS as WKT, '' when the raster has none.
        nodata: per band, the nodata value or None.
        dtype: numpy dtype of the raw values.
        color_interpretations: per band, GDAL's colour interpretation name ("Red", "Blue",
            "Gray", ...; "" unknown); empty when the source does not say.
    """

    color_interpretations: Sequence[str] = ()
    width: int
    height: int
    band_count: int
    geotransform: tuple[float, float, float, float, float, float]
    crs_wkt: str
    nodata: list[float | None]
    dtype: np.dtype

    @abc.abstractmethod
    def read(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int],
             out_w: int | None = None, out_h: int | None = None) -> np.ndarray:
        """Raw values of an in-raster window as float32, shape (len(bands), out_h, out_w).

        ``bands`` are 1-based. With ``out_w``/``out_h`` the window is resampled (decimated read,
        from overviews where the source has them). The window must lie inside the raster; the
        engine clips and pads.
        """

    @abc.abstractmethod
    def valid(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]
              ) -> np.ndarray:
        """Boolean (ysize, xsize) mask, False where the source marks the pixel as nodata/masked
        in any of ``bands``."""

    def read_native(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]
                    ) -> np.ndarray:
        """Raw values of an in-raster window at full resolution, (len(bands), ysize, xsize):
        in the source's own type where that is an integer of at most 16 bits (a quarter of the
        float32 traffic, and exact integer sums for block means), else float32 as :meth:`read`.
        """
        return self.read(xoff, yoff, xsize, ysize, bands)

    def reopen(self) -> "WindowReader | None":
        """Another handle on the same raster, for a second reading thread; None when this
        reader cannot open one (then the engine reads in a single thread)."""
        return None

    def cumulative_cut(self, band: int, low: float, high: float) -> tuple[float, float] | None:
        """Raw values at the ``low`` and ``high`` percent of band ``band``'s cumulative count
        (nodata and NaN excluded), from a bounded sample; None when the band has no valid
        pixel. Used to stretch rasters that are not 8-bit (:mod:`.stretch`)."""
        from .stretch import sampled_cut

        return sampled_cut(self, band, low, high)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the source."""

    def __enter__(self) -> "WindowReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class GdalReader(WindowReader):
    """A raster opened read-only with GDAL: GeoTIFF, COG, JPEG, PNG, VRT, anything GDAL reads.

    Decimated reads (``out_w``/``out_h`` smaller than the window) average the source pixels
    (``GRIORA_Average``, nodata excluded) and use the file's overviews only when they hold area
    means (checked on a sample, :func:`averaging_overviews`): contexts must be the area means the
    model was trained on. The file itself is never modified (no overviews are built, no
    statistics saved). Reads by integral factors of integer rasters without overviews or nodata
    take the faster, value-identical numpy path of :mod:`.decimate`. A block GDAL cannot read
    (truncated or corrupt file) raises :class:`RasterReadError` naming the file and the block.
    """

    def __init__(self, path: str, overviews: bool | None = None) -> None:
        from osgeo import gdal

        self.path = str(path)
        self._ds = gdal_open(self.path)
        if overviews is None:
            band = self._ds.GetRasterBand(1) if self._ds.RasterCount else None
            overviews = not (band and band.GetOverviewCount()) or averaging_overviews(self._ds)
            if not overviews:
                log.warning("the overviews of %s were not built by averaging (nearest, cubic "
                            "or mode): contexts are read from full resolution, as the model was "
                            "trained; rebuild them with `gdaladdo -r average` for faster "
                            "reads", self.path)
        self.overviews = overviews
        if not overviews:
            self._ds = gdal_open(self.path, overviews=False)
        ds = self._ds
        self.width, self.height, self.band_count = ds.RasterXSize, ds.RasterYSize, ds.RasterCount
        if self.band_count < 1:
            raise ValueError(f"{self.path} has no raster band: it is not an image GDAL can read "
                             "(is it a vector file or a multi-dataset container?)")
        gt = ds.GetGeoTransform(can_return_null=True)
        self.has_geotransform = gt is not None
        self.geotransform = tuple(gt) if gt is not None else (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
        self.crs_wkt = ds.GetProjection() or ""
        self.nodata = [ds.GetRasterBand(b).GetNoDataValue() for b in range(1, self.band_count + 1)]
        self.color_interpretations = [
            gdal.GetColorInterpretationName(ds.GetRasterBand(b).GetColorInterpretation()) or ""
            for b in range(1, self.band_count + 1)]
        dt = ds.GetRasterBand(1).DataType
        self.dtype = np.dtype(_GDAL_NUMPY.get(gdal.GetDataTypeName(dt), np.float64))
        self._all_valid = [bool(ds.GetRasterBand(b).GetMaskFlags() & gdal.GMF_ALL_VALID)
                           for b in range(1, self.band_count + 1)]
        self._boxes = BoxDecimation(ds)

    def _check(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]) -> None:
        if self._ds is None:
            raise ValueError(f"{self.path} is closed")
        bad = [b for b in bands if not 1 <= b <= self.band_count]
        if bad:
            raise ValueError(f"band(s) {bad} do not exist: {self.path} has {self.band_count}")
        if xoff < 0 or yoff < 0 or xsize <= 0 or ysize <= 0 or xoff + xsize > self.width \
                or yoff + ysize > self.height:
            raise ValueError(f"window ({xoff}, {yoff}, {xsize}, {ysize}) is not inside the "
                             f"{self.width} x {self.height} raster")

    def read(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int],
             out_w: int | None = None, out_h: int | None = None) -> np.ndarray:
        from osgeo import gdal

        self._check(xoff, yoff, xsize, ysize, bands)
        out_w, out_h = out_w or xsize, out_h or ysize
        unique = sorted(set(int(b) for b in bands))
        resample = gdal.GRIORA_Average if (out_w < xsize or out_h < ysize) \
            else gdal.GRIORA_Bilinear if (out_w > xsize or out_h > ysize) \
            else gdal.GRIORA_NearestNeighbour

        def gdal_read() -> np.ndarray:
            arr = self._gdal_call(xoff, yoff, xsize, ysize, unique, lambda: self._ds.ReadAsArray(
                int(xoff), int(yoff), int(xsize), int(ysize), buf_xsize=int(out_w),
                buf_ysize=int(out_h), buf_type=gdal.GDT_Float32, resample_alg=resample,
                band_list=unique))
            return arr.reshape(len(unique), out_h, out_w)

        factors = self._boxes.factors(xsize, ysize, out_w, out_h)
        if factors is None:
            arr = gdal_read()
        else:   # a failed numpy-path read falls back to gdal_read, which reports it
            gdal.PushErrorHandler("CPLQuietErrorHandler")
            try:
                arr = self._boxes.read(xoff, yoff, xsize, ysize, unique, factors, gdal_read)
            finally:
                gdal.PopErrorHandler()
        return _in_band_order(arr, unique, bands)

    def read_native(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]
                    ) -> np.ndarray:
        if self.dtype not in NATIVE_TYPES:
            return self.read(xoff, yoff, xsize, ysize, bands)
        self._check(xoff, yoff, xsize, ysize, bands)
        unique = sorted(set(int(b) for b in bands))
        arr = self._gdal_call(xoff, yoff, xsize, ysize, unique, lambda: self._ds.ReadAsArray(
            int(xoff), int(yoff), int(xsize), int(ysize), band_list=unique))
        return _in_band_order(arr.reshape(len(unique), ysize, xsize), unique, bands)

    def masked(self, bands: Sequence[int]) -> bool:
        """Whether any of ``bands`` has nodata or a mask (else :meth:`valid` is all True)."""
        return not all(self._all_valid[int(b) - 1] for b in bands)

    def valid(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int]
              ) -> np.ndarray:
        self._check(xoff, yoff, xsize, ysize, bands)
        mask = np.ones((ysize, xsize), dtype=bool)
        for b in sorted(set(int(b) for b in bands)):
            if self._all_valid[b - 1]:
                continue
            m = self._gdal_call(xoff, yoff, xsize, ysize, [b], lambda: self._ds.GetRasterBand(
                b).GetMaskBand().ReadAsArray(xoff, yoff, xsize, ysize), what="the mask of ")
            mask &= m != 0
        return mask

    def _gdal_call(self, xoff: int, yoff: int, xsize: int, ysize: int, bands: Sequence[int],
                   call, what: str = "") -> np.ndarray:
        """``call()`` (a GDAL read of that window) with GDAL's messages kept out of the
        console; a failure (a truncated or corrupt file) raises :class:`RasterReadError`
        naming the file, the bands and the block."""
        from osgeo import gdal

        gdal.PushErrorHandler("CPLQuietErrorHandler")   # per thread: safe in reading threads
        gdal.ErrorReset()
        try:
            arr, msg = call(), gdal.GetLastErrorMsg()
        except RuntimeError as exc:   # GDAL's exceptions, when the host turned them on
            arr, msg = None, str(exc)
        finally:
            gdal.PopErrorHandler()
        if arr is None:
            raise RasterReadError(self.path, (xoff, yoff, xsize, ysize), bands,
                                  msg or "unknown error", what)
        return arr

    def cumulative_cut(self, band: int, low: float, high: float) -> tuple[float, float] | None:
        # Pixels read, not GDAL's histogram: that one is cached into an .aux.xml next to the
        # input, which is never modified. Whole band when small, else an overview of a few
        # million pixels, else whole blocks spread over the band (cheap whatever its size).
        from .stretch import SAMPLE_PIXELS, percentile_cut, sample_windows, valid_values

        self._check(0, 0, 1, 1, [band])
        b = self._ds.GetRasterBand(band)
        nd = self.nodata[band - 1]
        src, windows, what = b, [(0, 0, self.width, self.height)], ""
        if self.width * self.height > 4 * SAMPLE_PIXELS:
            levels = [(i, b.GetOverview(i)) for i in range(b.GetOverviewCount())]
            levels = [(i, o) for i, o in levels if o is not None
                      and SAMPLE_PIXELS <= o.XSize * o.YSize <= 16 * SAMPLE_PIXELS]
            if levels:
                i, src = min(levels, key=lambda lv: lv[1].XSize * lv[1].YSize)
                windows, what = [(0, 0, src.XSize, src.YSize)], f"overview {i + 1} of "
            else:
                windows = sample_windows(self.width, self.height, b.GetBlockSize(),
                                         4 * SAMPLE_PIXELS)
        values = [valid_values(self._gdal_call(x, y, w, h, [band], lambda: src.ReadAsArray(
            x, y, w, h), what), nd) for x, y, w, h in windows]
        return percentile_cut(np.concatenate(values), low, high)

    def reopen(self) -> "GdalReader":
        return GdalReader(self.path, self.overviews)

    def close(self) -> None:
        self._ds = None


class RasterReadError(OSError):
    """GDAL failed to read a block of the input: the file is truncated or corrupt."""

    def __init__(self, path: str, window: tuple[int, int, int, int], bands: Sequence[int],
                 reason: str, what: str = "") -> None:
        x, y, w, h = (int(v) for v in window)
        band_list = ", ".join(str(b) for b in bands)
        super().__init__(f"cannot read {what}pixels x {x}..{x + w - 1}, y {y}..{y + h - 1} "
                         f"(band {band_list}) of {path}: {reason.strip().rstrip('.')}. The file is "
                         "truncated or corrupt: copy or export it again (gdalinfo -checksum "
                         "shows which blocks fail)")
        self.path, self.window = path, (x, y, w, h)


def _in_band_order(arr: np.ndarray, unique: list[int], bands: Sequence[int]) -> np.ndarray:
    """Planes of ``arr`` (read for the sorted ``unique`` bands) in the order of ``bands``."""
    index = [unique.index(int(b)) for b in bands]
    return arr if index == list(range(len(unique))) else arr[index]


# Integer types that float32 holds exactly, returned as they are by read_native.
NATIVE_TYPES = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.uint16), np.dtype(np.int16))

_GDAL_NUMPY = {"Byte": np.uint8, "Int8": np.int8, "UInt16": np.uint16, "Int16": np.int16,
               "UInt32": np.uint32, "Int32": np.int32, "UInt64": np.uint64, "Int64": np.int64,
               "Float32": np.float32, "Float64": np.float64}


def averaging_overviews(ds, sample: int = 64) -> bool:
    """Whether every overview of ``ds`` holds area means of its source (GDAL's ``average``).

    GDAL records no resampling method for overviews, and the engine's contexts must be area means
    as in training (:mod:`model_core.resample`): a central sample of each level is compared with
    the average read of the full-resolution pixels it covers (at most 1 grey level apart on 99 %
    of the sample). Overviews built with nearest, cubic or mode fail this on real imagery.
    """
    from osgeo import gdal

    full = gdal.OpenEx(ds.GetDescription(), gdal.OF_RASTER | gdal.OF_READONLY,
                       open_options=["OVERVIEW_LEVEL=NONE"])
    if full is None:
        return False
    w, h = ds.RasterXSize, ds.RasterYSize
    for b in range(1, ds.RasterCount + 1):
        band = ds.GetRasterBand(b)
        for i in range(band.GetOverviewCount()):
            ovr = band.GetOverview(i)
            ow, oh = ovr.XSize, ovr.YSize
            sw, sh = min(sample, ow), min(sample, oh)
            ox, oy = (ow - sw) // 2, (oh - sh) // 2
            fx, fy = w / ow, h / oh
            got = ovr.ReadAsArray(ox, oy, sw, sh).astype(np.float64)
            x0, y0 = ox * fx, oy * fy
            ref = full.GetRasterBand(b).ReadAsArray(
                int(round(x0)), int(round(y0)), int(round(sw * fx)), int(round(sh * fy)),
                buf_xsize=sw, buf_ysize=sh, resample_alg=gdal.GRIORA_Average).astype(np.float64)
            tol = 1.0 if ovr.DataType in (gdal.GDT_Byte, gdal.GDT_UInt16, gdal.GDT_Int16) \
                else 1e-3 * max(1.0, float(np.abs(ref).max()))
            if np.mean(np.abs(got - ref) <= tol) < 0.99:
                return False
    return True


def gdal_open(path: str, overviews: bool = True):
    """Open ``path`` read-only as a GDAL raster, or raise a clear error (whatever GDAL's
    exception mode is: it is process-wide, so it is left as the caller set it).
    ``overviews=False`` hides the file's overviews from reads (contexts from full resolution)."""
    import os

    from osgeo import gdal

    if not os.path.exists(path) and not path.startswith("/vsi"):
        raise FileNotFoundError(f"input raster {path} does not exist")
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    gdal.ErrorReset()
    try:
        ds = gdal.OpenEx(path, gdal.OF_RASTER | gdal.OF_READONLY,
                         open_options=[] if overviews else ["OVERVIEW_LEVEL=NONE"])
        msg = gdal.GetLastErrorMsg()
    except RuntimeError as exc:
        ds, msg = None, str(exc)
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise ValueError(f"GDAL cannot open {path} as a raster ({msg or 'unknown format'}); "
                         "give a GeoTIFF, COG, JPEG, PNG, VRT or another GDAL raster")
    return ds
