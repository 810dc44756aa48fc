"""Labels from GIS data for fine-tuning and evaluation (no QGIS needed).

A label source is a polygon layer (any OGR format, any CRS) with an optional class field, or a
label raster (any grid, any CRS). :func:`read_training_area` reads the training area of a raster
(the labels' extent or a given one, in any CRS) as the segmentation engine reads it (bands,
single-band replication, 8-bit scale or the 2-98 % stretch of other types) and burns the labels
onto exactly that grid: polygons are reprojected with OGR and rasterised with
``gdal.RasterizeLayer``, label rasters are warped with nearest neighbour.

Classes: without a class field every polygon is one class named after the layer and the other
pixels of the area are class 0 "background"; with one, its integer ids are the class ids (names
"class N") or its text values become classes in order of first appearance (or the base model's
ids when every name is one of its classes), and unlabelled pixels are ignored (:data:`IGNORE`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..ground import srs_of

log = logging.getLogger(__name__)

IGNORE = 255            # label of pixels without a class (ignored in loss and scores)
MAX_SIDE = 8000         # the largest training area side, in pixels of the raster
ClassList = list[tuple[int, str, tuple[int, int, int]]]
# Distinct colours for new classes (background first)
BACKGROUND_COLOR = (190, 190, 190)
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
           (0, 128, 128), (170, 110, 40), (128, 0, 0), (128, 128, 0), (0, 0, 128)]


class LabelError(ValueError):
    """Labels that cannot be used; the message names the problem and the remedy."""


@dataclass
class LabelSource:
    """Where the labels come from.

    Attributes:
        path: a vector dataset (GeoPackage, Shapefile...) or a label raster (class ids).
        layer: the vector layer's name (default: the first).
        field: class field of the polygons: integer ids or text names; None = one class.
        name: the class name of the polygons when ``field`` is None (default: the layer name).
    """

    path: str
    layer: str | None = None
    field: str | None = None
    name: str | None = None


@dataclass
class Grid:
    """A north-up pixel grid: the training area on the raster."""

    geotransform: tuple[float, ...]
    width: int
    height: int
    crs_wkt: str = ""

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        gt = self.geotransform
        return (gt[0], gt[3] + gt[5] * self.height, gt[0] + gt[1] * self.width, gt[3])


@dataclass
class Labels:
    """Class ids on a grid (:data:`IGNORE` = unlabelled) and the classes they stand for."""

    label: np.ndarray
    classes: ClassList
    num_classes: int
    matched_base: bool = False      # the classes are the base model's (same ids, names)
    notes: list[str] = field(default_factory=list)


def transform_bounds(bounds: Sequence[float], src_wkt: str | None, dst_wkt: str | None
                     ) -> tuple[float, float, float, float]:
    """``bounds`` (xmin, ymin, xmax, ymax) reprojected, edges densified (21 points each)."""
    from osgeo import osr

    src, dst = srs_of(src_wkt), srs_of(dst_wkt)
    if src is None or dst is None or src.IsSame(dst):
        return tuple(float(v) for v in bounds)  # type: ignore[return-value]
    ct = osr.CoordinateTransformation(src, dst)
    x0, y0, x1, y1 = bounds
    t = np.linspace(0.0, 1.0, 21)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(21, x1), x0 + (x1 - x0) * t, np.full(21, x0)])
    ys = np.concatenate([np.full(21, y0), y0 + (y1 - y0) * t, np.full(21, y1), y0 + (y1 - y0) * t])
    pts = np.array(ct.TransformPoints(list(zip(xs.tolist(), ys.tolist()))))[:, :2]
    pts = pts[np.isfinite(pts).all(1)]
    if not len(pts):
        raise LabelError("the extent cannot be reprojected onto the raster's CRS: check the "
                         "CRS of the layers")
    return (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()),
            float(pts[:, 1].max()))


def is_vector(path: str) -> bool:
    from osgeo import gdal

    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = gdal.OpenEx(str(path), gdal.OF_VECTOR)
        return ds is not None and ds.GetLayerCount() > 0
    finally:
        gdal.PopErrorHandler()


def _open_layer(source: LabelSource):
    from osgeo import gdal

    ds = gdal.OpenEx(str(source.path), gdal.OF_VECTOR)
    if ds is None:
        raise LabelError(f"cannot open the labels {source.path}: give a polygon layer or a "
                         "label raster")
    lyr = ds.GetLayerByName(source.layer) if source.layer else ds.GetLayer(0)
    if lyr is None:
        raise LabelError(f"{source.path} has no layer {source.layer!r}")
    return ds, lyr


def label_bounds(source: LabelSource, dst_wkt: str) -> tuple[float, float, float, float]:
    """The labels' extent in ``dst_wkt`` (the raster's CRS)."""
    from osgeo import gdal

    if is_vector(source.path):
        ds, lyr = _open_layer(source)
        if lyr.GetFeatureCount() == 0:
            raise LabelError(f"the labels layer {lyr.GetName()!r} has no polygons: draw some "
                             "polygons over the raster first")
        x0, x1, y0, y1 = lyr.GetExtent()
        srs = lyr.GetSpatialRef()
        return transform_bounds((x0, y0, x1, y1), srs.ExportToWkt() if srs else None, dst_wkt)
    ds = gdal.Open(str(source.path))
    if ds is None:
        raise LabelError(f"cannot open the labels {source.path}: give a polygon layer or a "
                         "label raster")
    g = Grid(ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize, ds.GetProjection())
    return transform_bounds(g.bounds, g.crs_wkt, dst_wkt)


def area_window(raster_grid: Grid, bounds: Sequence[float], what: str,
                max_side: int = MAX_SIDE) -> tuple[int, int, int, int]:
    """Pixel window (xoff, yoff, w, h) of the raster covering ``bounds`` (raster CRS)."""
    gt = raster_grid.geotransform
    if gt[2] or gt[4]:
        raise LabelError("rotated rasters are not supported for training: warp the raster to "
                         "a north-up grid first (gdalwarp)")
    x0, y0, x1, y1 = bounds
    c0 = int(np.floor((x0 - gt[0]) / gt[1] + 1e-6))
    c1 = int(np.ceil((x1 - gt[0]) / gt[1] - 1e-6))
    r0 = int(np.floor((y1 - gt[3]) / gt[5] + 1e-6))
    r1 = int(np.ceil((y0 - gt[3]) / gt[5] - 1e-6))
    c0, r0 = max(c0, 0), max(r0, 0)
    c1, r1 = min(c1, raster_grid.width), min(r1, raster_grid.height)
    if c1 <= c0 or r1 <= r0:
        rb = raster_grid.bounds
        raise LabelError(f"the {what} ({x0:.6g}, {y0:.6g}, {x1:.6g}, {y1:.6g} in the raster's "
                         f"CRS) lies outside the raster ({rb[0]:.6g}, {rb[1]:.6g}, {rb[2]:.6g}, "
                         f"{rb[3]:.6g}): label areas of this raster, or check the layers' CRS")
    w, h = c1 - c0, r1 - r0
    if max(w, h) > max_side:
        raise LabelError(f"the training area is {w} x {h} px, more than {max_side} x {max_side}:"
                         " choose a smaller extent (or label a smaller area)")
    return c0, r0, w, h


def window_grid(raster_grid: Grid, window: Sequence[int]) -> Grid:
    gt = raster_grid.geotransform
    x, y, w, h = window
    return Grid((gt[0] + x * gt[1], gt[1], 0.0, gt[3] + y * gt[5], 0.0, gt[5]), w, h,
                raster_grid.crs_wkt)


# --------------------------------------------------------------------------- rasterising
def rasterize_labels(source: LabelSource, grid: Grid, base_classes: ClassList | None = None,
                     strict: bool = False) -> Labels:
    """The labels burnt onto ``grid``. ``base_classes``: the model's (id, name, colour); with
    ``strict`` (evaluation) every label class must be one of them."""
    if is_vector(source.path):
        return _rasterize_polygons(source, grid, base_classes, strict)
    return _warp_label_raster(source, grid, base_classes, strict)


def _mem(grid: Grid, fill: int):
    from osgeo import gdal

    mem = gdal.GetDriverByName("MEM").Create("", grid.width, grid.height, 1, gdal.GDT_Byte)
    mem.SetGeoTransform(grid.geotransform)
    if grid.crs_wkt:
        mem.SetProjection(grid.crs_wkt)
    band = mem.GetRasterBand(1)
    band.Fill(fill)
    return mem


def _rasterize_polygons(source: LabelSource, grid: Grid, base: ClassList | None,
                        strict: bool) -> Labels:
    from osgeo import gdal, ogr, osr

    ds, lyr = _open_layer(source)
    name = source.name or lyr.GetName()
    defn = lyr.GetLayerDefn()
    idx = -1
    if source.field:
        idx = defn.GetFieldIndex(source.field)
        if idx < 0:
            names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
            raise LabelError(f"the labels layer has no field {source.field!r}; its fields are "
                             f"{names}")
    integer = idx >= 0 and defn.GetFieldDefn(idx).GetType() in (ogr.OFTInteger, ogr.OFTInteger64)
    src_srs = lyr.GetSpatialRef()
    if src_srs is not None:
        src_srs = src_srs.Clone()
        src_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    dst_srs = srs_of(grid.crs_wkt)
    ct = None
    if src_srs is not None and dst_srs is not None and not src_srs.IsSame(dst_srs):
        ct = osr.CoordinateTransformation(src_srs, dst_srs)
    mem_ds = ogr.GetDriverByName("Memory").CreateDataSource("labels")
    mem_lyr = mem_ds.CreateLayer("labels", dst_srs, ogr.wkbMultiPolygon)
    mem_lyr.CreateField(ogr.FieldDefn("cid", ogr.OFTInteger))
    values: list = []           # class values in order of first appearance
    polygons = 0
    for feat in lyr:
        geom = feat.GetGeometryRef()
        if geom is None or geom.IsEmpty() or ogr.GT_Flatten(geom.GetGeometryType()) not in (
                ogr.wkbPolygon, ogr.wkbMultiPolygon, ogr.wkbCurvePolygon, ogr.wkbMultiSurface):
            continue
        polygons += 1
        if idx >= 0:
            if not feat.IsFieldSetAndNotNull(idx):
                continue
            value = feat.GetFieldAsInteger64(idx) if integer else feat.GetFieldAsString(idx).strip()
            if value == "":
                continue
            if value not in values:
                values.append(value)
        else:
            value = None
        geom = geom.Clone()
        if ct is not None and geom.Transform(ct) != 0:
            raise LabelError("a label polygon cannot be reprojected onto the raster's CRS: check "
                             "the labels layer's CRS")
        out = ogr.Feature(mem_lyr.GetLayerDefn())
        out.SetGeometry(geom)
        out.SetField("cid", 0 if value is None else values.index(value))
        mem_lyr.CreateFeature(out)
    if polygons == 0:
        raise LabelError(f"the labels layer {lyr.GetName()!r} holds no polygons: draw polygons "
                         "(or give a label raster)")
    if len(values) >= IGNORE:
        raise LabelError(f"the class field {source.field!r} holds {len(values)} values: at most "
                         f"{IGNORE - 1} classes fit a model")
    if idx >= 0 and len(values) < 2 and not strict:
        what = f"one value only ({values[0]!r})" if values else "no value"
        raise LabelError(f"the class field {source.field!r} holds {what}: a model needs two "
                         "classes or more. Label other classes too, or leave the class field "
                         "empty to train the polygons against the background")
    if idx < 0:
        if strict and base is not None:
            bg, fg = _strict_single(base, name)
            matched = True
        else:
            bg, fg = (0, "background", BACKGROUND_COLOR), (1, name, PALETTE[0])
            matched = False
        classes: ClassList = [bg, fg]
    else:
        classes, lut, matched = _classes_for(values, integer, base, strict, source.field or "")
    mem = _mem(grid, IGNORE)
    err = gdal.RasterizeLayer(mem, [1], mem_lyr, options=["ATTRIBUTE=cid"])
    if err != 0:
        raise LabelError(f"rasterising the labels failed: {gdal.GetLastErrorMsg()}")
    burnt = mem.GetRasterBand(1).ReadAsArray().astype(np.int64)
    mem = mem_lyr = mem_ds = None
    if idx < 0:   # inside a polygon: its class; elsewhere in the area: background
        label = np.where(burnt == 0, fg[0], bg[0]).astype(np.uint8)
    else:         # outside every polygon: unlabelled
        label = np.full(burnt.shape, IGNORE, np.uint8)
        inside = burnt != IGNORE
        label[inside] = lut[burnt[inside]]
    k = max(c[0] for c in classes) + 1
    if base is not None and matched:
        k = max(k, max(c[0] for c in base) + 1)
    return Labels(label, classes, k, matched)


def _strict_single(base: ClassList, name: str) -> ClassList:
    """Evaluation without a class field: the model's background and polygon classes."""
    by_name = {n.lower(): (i, n, c) for i, n, c in base}
    fg = by_name.get(name.lower())
    if fg is None and len(base) == 2:
        fg = max(base)
    if fg is None:
        raise LabelError(f"without a class field the polygons are class {name!r}, which the "
                         f"model does not have (its classes: {[n for _, n, _ in base]}): name "
                         "the class field")
    bg = by_name.get("background") or min(c for c in base if c[0] != fg[0])
    return [bg, fg]


def _classes_for(values: list, integer: bool, base: ClassList | None, strict: bool,
                 what: str) -> tuple[ClassList, np.ndarray, bool]:
    """Classes and the lookup value index -> class id."""
    base_by_id = {i: (i, n, c) for i, n, c in (base or [])}
    base_by_name = {n.lower(): (i, n, c) for i, n, c in (base or [])}
    if integer:
        bad = [v for v in values if not 0 <= int(v) < IGNORE]
        if bad:
            raise LabelError(f"class ids {bad} of {what!r} are outside 0..{IGNORE - 1}: use "
                             "small non-negative integers (or text names)")
        ids = [int(v) for v in values]
        if strict:
            missing = [i for i in ids if i not in base_by_id]
            if missing:
                raise LabelError(f"class ids {missing} of the labels are not classes of the "
                                 f"model (its ids: {sorted(base_by_id)})")
            return [base_by_id[i] for i in sorted(ids)], np.array(ids), True
        classes = [(i, f"class {i}", PALETTE[n % len(PALETTE)])
                   for n, i in enumerate(sorted(ids))]
        return classes, np.array(ids), False
    names = [str(v) for v in values]
    if base and all(n.lower() in base_by_name for n in names):
        ids = [base_by_name[n.lower()][0] for n in names]
        return list(base), np.array(ids), True
    if strict:
        missing = [n for n in names if n.lower() not in base_by_name]
        raise LabelError(f"classes {missing} of the labels are not classes of the model (its "
                         f"classes: {sorted(base_by_name)})")
    classes = [(i, n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)]
    return classes, np.arange(len(names)), False


def binary_mask(values: np.ndarray, base: ClassList | None, strict: bool) -> bool:
    """Whether label values (declared nodata left out) are a 0/255 mask of two classes: for
    training always (255 as "unlabelled" would leave a single class), for scoring when the
    model has exactly the classes 0 and 1."""
    if {int(v) for v in values} != {0, IGNORE}:
        return False
    return not strict or sorted(c[0] for c in base or []) == [0, 1]


def _warp_label_raster(source: LabelSource, grid: Grid, base: ClassList | None,
                       strict: bool) -> Labels:
    from osgeo import gdal

    src = gdal.Open(str(source.path))
    if src is None:
        raise LabelError(f"cannot open the labels {source.path}: give a polygon layer or a "
                         "label raster")
    band = src.GetRasterBand(1)
    if gdal.GetDataTypeName(band.DataType) not in ("Byte", "UInt16", "Int16", "UInt32", "Int32"):
        raise LabelError(f"the label raster {source.path} is not an integer raster: its values "
                         "must be class ids")
    nodata = band.GetNoDataValue()
    x0, y0, x1, y1 = grid.bounds
    opts = gdal.WarpOptions(format="MEM", outputBounds=(x0, y0, x1, y1), width=grid.width,
                            height=grid.height, dstSRS=grid.crs_wkt or None,
                            resampleAlg="near", outputType=gdal.GDT_Int32, dstNodata=-1,
                            srcNodata=nodata)
    out = gdal.Warp("", src, options=opts)
    if out is None:
        raise LabelError(f"the label raster cannot be warped onto the raster's grid: "
                         f"{gdal.GetLastErrorMsg()}")
    arr = out.GetRasterBand(1).ReadAsArray()
    valid = arr >= 0
    values = np.unique(arr[valid])
    if ((values >= IGNORE) & (values != IGNORE)).any():
        raise LabelError(f"the label raster holds values above {IGNORE}: class ids must be "
                         f"0..{IGNORE - 1} ({IGNORE} = unlabelled)")
    names = list(band.GetCategoryNames() or [])   # a raster attribute table's names, if any
    if binary_mask(values, base, strict):
        # 0/255 (Inria, SpaceNet, most building masks): 255 is the mask, not "unlabelled",
        # which would leave one class to learn or score
        log.info("the label raster %s holds only 0 and 255: read as a binary mask, classes 0 "
                 "and 1 (give 255 another value or declare it nodata if it marks unlabelled "
                 "pixels)", source.path)
        arr = np.where(arr == IGNORE, 1, arr)
        values = np.array([0, 1])
        names = names[:1] + names[IGNORE:IGNORE + 1]   # the category names go with the ids
    values = [int(v) for v in values if v != IGNORE]
    label = np.full(arr.shape, IGNORE, np.uint8)
    label[valid] = arr[valid].clip(0, IGNORE).astype(np.uint8)
    if not strict and len(values) < 2:
        raise LabelError(f"the label raster holds {'one class only' if values else 'no class'} "
                         "in the training area: a model needs two classes or more")
    base_by_id = {i: (i, n, c) for i, n, c in (base or [])}
    if strict:
        missing = [v for v in values if v not in base_by_id]
        if missing:
            raise LabelError(f"class ids {missing} of the label raster are not classes of the "
                             f"model (its ids: {sorted(base_by_id)})")
        return Labels(label, [base_by_id[v] for v in values], max(base_by_id) + 1, True)
    classes = [(v, names[v] if v < len(names) and names[v] else f"class {v}",
                PALETTE[n % len(PALETTE)]) for n, v in enumerate(values)]
    return Labels(label, classes, max(values) + 1)
