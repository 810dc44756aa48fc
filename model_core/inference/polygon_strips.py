"""The regions of a class raster as polygons, computed in strips of rows in bounded memory.

Each strip (a few million pixels) is wrapped in a MEM dataset in *pixel* coordinates (x = column,
y = row) and polygonised by GDAL (4-connected, the band's mask honoured). Integer vertices let
the pieces of one region in adjacent strips share their border edges exactly, so GEOS unions
them without slivers; the caller applies the geotransform afterwards.

A piece that touches neither border of its strip is a whole region and leaves at once. The
pieces that do touch one are rasterised (by index) onto the strip's first and last rows; equal
classes on both sides of a border tie pieces into groups (union-find over that one row). A group
is unioned and leaves as soon as none of its pieces reaches the current bottom border. Held at
once: one strip, its pieces, and the groups crossing the current border. A region is always
held whole before it is written (as by any polygoniser), so one region as large as the raster
costs memory in proportion to its own outline; everything else stays flat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .options import Cancelled

log = logging.getLogger(__name__)

# pixels per strip: a strip's array, its MEM wrapper and its pieces (worst case a few tens of
# bytes per pixel for pure noise) stay within a few hundred MB
DEFAULT_STRIP_PIXELS = 4_000_000
# regions with at least this many vertices in their pieces are unioned by edge cancellation:
# GEOS's union costs about 260-300 bytes per vertex (759 MB for a 2.15 million-vertex region)
EDGE_UNION_VERTICES = 50_000


@dataclass
class _Group:
    """A region crossing strip borders: its class value and its pieces so far (pixel coords)."""

    value: int
    pieces: list = field(default_factory=list)


def strip_rows(width: int, strip_pixels: int = DEFAULT_STRIP_PIXELS) -> int:
    """Rows per strip for a raster ``width`` pixels wide."""
    return max(1, int(strip_pixels) // max(1, int(width)))


def iter_regions(band, strip_pixels: int = DEFAULT_STRIP_PIXELS,
                 progress: Callable[[float], None] | None = None,
                 is_cancelled: Callable[[], bool] | None = None
                 ) -> Iterator[tuple[int, object, bool]]:
    """``(value, polygon, known_valid)`` for every 4-connected region of equal value of
    ``band`` (a GDAL band of integer classes) where its mask band is valid, the polygon an OGR
    geometry in pixel coordinates (x = column, y = row from the top). Same regions as one
    ``gdal.Polygonize`` of the whole band. ``known_valid``: True for unions (GEOS returns valid
    polygons), False where GDAL's polygon was not checked (its rings may touch themselves at a
    pixel corner)."""
    from osgeo import gdal, gdal_array, ogr

    w, h = band.XSize, band.YSize
    mask = band.GetMaskBand()
    rows = strip_rows(w, strip_pixels)
    open_groups: dict[int, _Group] = {}
    prev = None          # (group id, value, valid) along the row above the current strip
    next_gid = 0
    for y0 in range(0, h, rows):
        if is_cancelled is not None and is_cancelled():
            raise Cancelled("segmentation cancelled while polygonising")
        y1 = min(h, y0 + rows)
        values = band.ReadAsArray(0, y0, w, y1 - y0)
        valid = (mask.ReadAsArray(0, y0, w, y1 - y0) != 0).view(np.uint8)
        # drop GDAL's cached blocks: the block cache would otherwise grow with the raster
        band.FlushCache()
        mask.FlushCache()
        if values is None or valid is None:
            raise OSError(f"cannot read rows {y0}-{y1} of the class raster: "
                          f"{gdal.GetLastErrorMsg()}")
        vds = gdal_array.OpenArray(values)      # MEM views on the arrays: no copy
        vds.SetGeoTransform((0.0, 1.0, 0.0, float(y0), 0.0, 1.0))
        mds = gdal_array.OpenArray(valid)
        mem = ogr.GetDriverByName("Memory").CreateDataSource("")
        lyr = mem.CreateLayer("pieces", None, ogr.wkbPolygon)
        lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
        err = gdal.Polygonize(vds.GetRasterBand(1), mds.GetRasterBand(1), lyr, 0, [])
        vds = mds = None
        if err != 0:
            raise OSError(f"polygonising rows {y0}-{y1} failed: {gdal.GetLastErrorMsg()}")
        top, bottom = y0 > 0, y1 < h
        border: list[tuple[int, object, bool]] = []   # (value, piece, reaches the bottom)
        for feat in lyr:
            geom = feat.GetGeometryRef()
            _, _, gy0, gy1 = geom.GetEnvelope()
            t, b = top and gy0 == y0, bottom and gy1 == y1
            if t or b:
                border.append((feat.GetField(0), geom.Clone(), b))
            else:
                yield feat.GetField(0), geom.Clone(), False
        lyr = mem = None
        top_pid = bot_pid = None
        if border:
            top_pid, bot_pid = _border_ids(border, w, y0 if top else None,
                                           y1 - 1 if bottom else None)
        # union-find over the groups above (ids >= 0) and this strip's border pieces (-pid)
        parent: dict[int, int] = {}

        def find(a: int) -> int:
            while parent.setdefault(a, a) != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        if top and prev is not None and top_pid is not None:
            gids, pvalues, pvalid = prev
            tie = (pvalid & valid[0]).astype(bool) & (pvalues == values[0])
            pairs = np.unique(np.stack([gids[tie], top_pid[tie]], axis=1), axis=0)
            for g, p in pairs.tolist():
                if g < 0 or p <= 0:
                    raise RuntimeError(f"internal error: row {y0} has a valid pixel outside "
                                       "every polygon piece")
                parent[find(int(g))] = find(-int(p))
        members: dict[int, list[int]] = {}
        for node in list(parent):
            members.setdefault(find(node), []).append(node)
        pid_gid = np.full(len(border) + 1, -1, np.int64)
        new_groups: dict[int, _Group] = {}
        linked: set[int] = set()
        for nodes in members.values():
            pids = [-n for n in nodes if n < 0]
            linked.update(pids)
            group = _Group(border[pids[0] - 1][0])
            for g in (n for n in nodes if n >= 0):
                group.pieces.extend(open_groups.pop(g).pieces)
            group.pieces.extend(border[p - 1][1] for p in pids)
            if any(border[p - 1][2] for p in pids):
                new_groups[next_gid] = group
                pid_gid[pids] = next_gid
                next_gid += 1
            else:
                yield from _close(group)
        for group in open_groups.values():      # nothing of theirs below the border: complete
            yield from _close(group)
        for pid, (value, piece, reaches) in enumerate(border, 1):
            if pid in linked:
                continue
            if reaches:
                new_groups[next_gid] = _Group(value, [piece])
                pid_gid[pid] = next_gid
                next_gid += 1
            else:
                yield value, piece, False
        open_groups = new_groups
        border = []
        if bottom:
            gids = pid_gid[bot_pid] if bot_pid is not None else np.full(w, -1, np.int64)
            prev = (gids, values[-1].copy(), valid[-1].copy())
        if progress is not None:
            progress(y1 / h)
    for group in open_groups.values():   # none: the last strip has no bottom border
        yield from _close(group)


def _border_ids(border: list, width: int, top_row: int | None, bottom_row: int | None
                ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The 1-based index in ``border`` of the piece covering each pixel of ``top_row`` and of
    ``bottom_row`` (0 where none): pixel centres are never on a piece's edge, so exact."""
    from osgeo import gdal, ogr, osr

    pixels = osr.SpatialReference()   # one CRS on both sides, or GDAL warns and reprojects
    pixels.SetLocalCS("pixels")
    mem = ogr.GetDriverByName("Memory").CreateDataSource("")
    lyr = mem.CreateLayer("border", pixels, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("pid", ogr.OFTInteger))
    defn = lyr.GetLayerDefn()
    for pid, (_, piece, _) in enumerate(border, 1):
        f = ogr.Feature(defn)
        f.SetField(0, pid)
        f.SetGeometry(piece)
        lyr.CreateFeature(f)
    out = []
    for row in (top_row, bottom_row):
        if row is None:
            out.append(None)
            continue
        ds = gdal.GetDriverByName("MEM").Create("", width, 1, 1, gdal.GDT_Int32)
        ds.SetGeoTransform((0.0, 1.0, 0.0, float(row), 0.0, 1.0))
        ds.SetSpatialRef(pixels)
        lyr.SetSpatialFilterRect(0.0, float(row), float(width), float(row + 1))
        if gdal.RasterizeLayer(ds, [1], lyr, options=["ATTRIBUTE=pid"]) != 0:
            raise OSError(f"rasterising the pieces on row {row} failed: "
                          f"{gdal.GetLastErrorMsg()}")
        out.append(ds.GetRasterBand(1).ReadAsArray()[0].astype(np.int64))
    return out[0], out[1]


def _vertices(pieces: list) -> int:
    return sum(p.GetGeometryRef(i).GetPointCount() for p in pieces
               for i in range(p.GetGeometryCount()))


def _close(group: _Group) -> Iterator[tuple[int, object, bool]]:
    """The group's pieces unioned into its region's polygon: by edge cancellation for large
    regions (:mod:`.polygon_edges`, a fraction of GEOS's memory), else by GEOS."""
    from osgeo import ogr

    if len(group.pieces) == 1:
        yield group.value, group.pieces[0], False
        return
    if _vertices(group.pieces) >= EDGE_UNION_VERTICES:
        from .polygon_edges import union_pieces

        merged = union_pieces(group.pieces)
        if merged is not None:
            group.pieces = []
            yield group.value, merged, True    # valid by construction (tested against GEOS)
            return
        log.info("a large region's edges did not close: unioned by GEOS instead")
    multi = ogr.Geometry(ogr.wkbMultiPolygon)
    for piece in group.pieces:
        # GEOS refuses invalid inputs (GDAL's rings can touch themselves at a pixel corner)
        for part in (piece,) if piece.IsValid() else polygon_parts(piece.MakeValid()):
            multi.AddGeometry(part)
    group.pieces = []
    merged = multi.UnionCascaded()
    if merged is None:
        raise RuntimeError("internal error: the union of a region's pieces failed")
    parts = polygon_parts(merged)
    if len(parts) != 1:
        log.debug("a region's pieces unioned into %d polygons", len(parts))
    for part in parts:
        yield group.value, part, True


def polygon_parts(geom) -> list:
    """Polygonal parts of a geometry (lines and points of collapsed parts dropped)."""
    from osgeo import ogr

    if geom is None or geom.IsEmpty():
        return []
    t = ogr.GT_Flatten(geom.GetGeometryType())
    if t == ogr.wkbPolygon:
        return [geom.Clone()]
    if t in (ogr.wkbMultiPolygon, ogr.wkbGeometryCollection):
        out = []
        for i in range(geom.GetGeometryCount()):
            out.extend(polygon_parts(geom.GetGeometryRef(i)))
        return out
    return []


def to_map(geom, gt) -> object:
    """A polygon in pixel coordinates moved to map coordinates by the geotransform ``gt``,
    vertex by vertex as GDAL's polygoniser computes them (so the result equals a one-pass
    polygonisation to the last bit)."""
    from osgeo import ogr

    if gt is None or tuple(gt) == (0.0, 1.0, 0.0, 0.0, 0.0, 1.0):
        return geom
    buf = bytearray(geom.ExportToWkb(ogr.wkbNDR))
    if int.from_bytes(buf[1:5], "little") != ogr.wkbPolygon:
        raise ValueError("to_map takes 2D polygons")
    rings = int.from_bytes(buf[5:9], "little")
    off = 9
    for _ in range(rings):
        n = int.from_bytes(buf[off:off + 4], "little")
        off += 4
        xy = np.frombuffer(buf, "<f8", 2 * n, off).reshape(n, 2)
        x, y = xy[:, 0].copy(), xy[:, 1].copy()
        xy[:, 0] = gt[0] + x * gt[1] + y * gt[2]
        xy[:, 1] = gt[3] + x * gt[4] + y * gt[5]
        off += 16 * n
    return ogr.CreateGeometryFromWkb(bytes(buf))
