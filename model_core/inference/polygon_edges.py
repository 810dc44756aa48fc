"""The union of one region's strip pieces by edge cancellation, without GEOS.

The pieces of a region (:mod:`.polygon_strips`) are pixel-aligned polygons in pixel coordinates
whose interiors never overlap, and pieces of adjacent strips share stretches of the strip
border exactly. So their union needs no overlay: orient every ring with the interior on its
left (exteriors counter-clockwise, holes clockwise, by the sign of the shoelace area), split
the horizontal edges at every endpoint lying on the same row (so that a shared stretch is the
same segment on both sides), drop each segment that also occurs reversed (a shared border),
and link what is left into rings. Where two boundary edges leave one vertex (pixels of the
region that touch only at a corner, 4-connectivity), the ring takes the rightmost turn, round
the pixel that is not the region's: each ring then parts the region from one outside or one
hole, and rings touch at that point instead of touching themselves (an inverted hole), the form
GEOS gives and OGC validity asks for.

Only horizontal edges on the strip borders can be shared (two pieces of one strip never share
an edge: they would be one piece), so only horizontal edges are cut and cancelled. A vertex is
one int64 key (row << 32 | column) and a directed edge its two keys: the arrays cost a few tens
of bytes per vertex at the peak, against about 260-300 bytes per vertex for GEOS's cascaded
union, which set the polygon step's peak on rasters with a very large region.
:func:`union_pieces` returns None when the result is not one shell with its holes of the
pieces' total area (it never was in the tests); the caller then falls back to GEOS.
"""

from __future__ import annotations

import logging
import struct
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

_WKB_POLYGON = 3
_SHIFT = 32                  # vertex key: row << 32 | column
_LOW = (1 << _SHIFT) - 1


def _ring_keys(piece) -> Iterator[np.ndarray]:
    """int64 vertex keys (row << 32 | column) of each ring of an OGR polygon (closing vertex
    dropped), exterior first, read from its WKB without a Python object per vertex."""
    from osgeo import ogr

    buf = piece.ExportToWkb(ogr.wkbNDR)
    gtype = struct.unpack_from("<I", buf, 1)[0]
    if gtype != _WKB_POLYGON:
        raise ValueError(f"expected a 2D polygon, got WKB type {gtype}")
    (nrings,) = struct.unpack_from("<I", buf, 5)
    off = 9
    for _ in range(nrings):
        (n,) = struct.unpack_from("<I", buf, off)
        off += 4
        pts = np.rint(np.frombuffer(buf, "<f8", 2 * n, off).reshape(n, 2)[:-1]).astype(np.int64)
        off += 16 * n
        if pts.min(initial=0) < 0 or pts.max(initial=0) > _LOW >> 1:
            raise ValueError("vertex outside the pixel grid")
        yield (pts[:, 1] << _SHIFT) | pts[:, 0]


def _xy(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return keys & _LOW, keys >> _SHIFT


def _twice_area(keys: np.ndarray) -> int:
    """Twice the signed (shoelace) area of a ring of vertex keys."""
    x, y = _xy(keys)
    return int(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _segments(pieces: list) -> tuple[np.ndarray, np.ndarray, int]:
    """Start and end keys of every ring edge, interior on the left (exteriors counter-clockwise,
    holes clockwise); and twice the pieces' total area."""
    m = sum(p.GetGeometryRef(i).GetPointCount() - 1 for p in pieces
            for i in range(p.GetGeometryCount()))
    a, b = np.empty(m, np.int64), np.empty(m, np.int64)
    off = total = 0
    for piece in pieces:
        for k, ring in enumerate(_ring_keys(piece)):
            a2 = _twice_area(ring)
            if (a2 < 0) == (k == 0):
                ring = ring[::-1]
                a2 = -a2
            total += a2
            n = len(ring)
            a[off:off + n] = ring
            b[off:off + n - 1] = ring[1:]
            b[off + n - 1] = ring[0]
            off += n
    if off != m:
        raise ValueError("ring sizes changed while reading")
    return a, b, total


def _shared_borders_cancelled(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges with every horizontal one cut at each horizontal endpoint on its row, and the
    cut pieces present in both directions (a border two pieces share) dropped."""
    hz = (a >> _SHIFT) == (b >> _SHIFT)
    ha, hb = a[hz], b[hz]
    a, b = a[~hz], b[~hz]
    del hz
    # keys order points by row, then column, so a row's endpoints are a contiguous sorted run
    ends = np.unique(np.concatenate([ha, hb]))
    lo, hi = np.minimum(ha, hb), np.maximum(ha, hb)
    first = np.searchsorted(ends, lo)
    count = np.searchsorted(ends, hi) - first            # pieces after cutting
    del lo, hi
    fwd = hb > ha
    del ha, hb
    idx = np.repeat(np.arange(len(first)), count)
    pos = np.repeat(first, count) + (np.arange(len(idx)) - np.repeat(np.cumsum(count) - count,
                                                                     count))
    del first, count
    left, right = ends[pos], ends[pos + 1]
    del pos, ends
    f = fwd[idx]
    del idx, fwd
    ca, cb = np.where(f, left, right), np.where(f, right, left)
    del f, left, right
    # a cut piece and its reverse share (min, max); a sort on that pair puts them side by side
    lo, hi = np.minimum(ca, cb), np.maximum(ca, cb)
    order = np.lexsort((hi, lo))
    del lo, hi
    sa, sb = ca[order], cb[order]
    pair = (sa[1:] == sb[:-1]) & (sb[1:] == sa[:-1])
    drop = np.zeros(len(order), bool)
    drop[1:] |= pair
    drop[:-1] |= pair
    del pair, order
    keep = ~drop
    return np.concatenate([a, sa[keep]]), np.concatenate([b, sb[keep]])


def _link(a: np.ndarray, b: np.ndarray) -> list[np.ndarray] | None:
    """The edges linked into rings (vertex keys, collinear vertices dropped); None when they
    do not form closed rings."""
    n = len(a)
    order = np.argsort(a, kind="stable")
    sk = a[order]
    lo = np.searchsorted(sk, b, "left")
    many = np.searchsorted(sk, b, "right") - lo
    del sk
    if np.any(many == 0) or np.any(many > 2):
        return None
    succ = order[lo]
    two = np.nonzero(many == 2)[0]
    del many
    if len(two):
        c1, c2 = order[lo[two]], order[lo[two] + 1]
        x0, y0 = _xy(a[two])
        x1, y1 = _xy(b[two])

        def cross(c: np.ndarray) -> np.ndarray:
            xa, ya = _xy(a[c])
            xb, yb = _xy(b[c])
            return (x1 - x0) * (yb - ya) - (y1 - y0) * (xb - xa)

        # the rightmost turn: go round the pixel that is not the region's, so that each ring
        # parts the region from one outside or hole only (rings touch, never themselves)
        succ[two] = np.where(np.sign(cross(c1)) <= np.sign(cross(c2)), c1, c2)
    del order, lo, two
    if len(np.unique(succ)) != n:
        return None
    seen = np.zeros(n, bool)
    path = np.empty(n, np.int64)
    rings = []
    for i in range(n):
        if seen[i]:
            continue
        k, j = 0, i
        while not seen[j]:
            seen[j] = True
            path[k] = j
            k += 1
            j = succ[j]
        if j != i:
            return None
        v = a[path[:k]]
        x, y = _xy(v)
        dx, dy = np.roll(x, -1) - x, np.roll(y, -1) - y
        turn = (np.roll(dx, 1) * dy - np.roll(dy, 1) * dx) != 0
        v = v[turn]
        if len(v) < 4:
            return None
        rings.append(v)
    return rings


def _to_ogr(shell: np.ndarray, holes: list[np.ndarray]):
    from osgeo import ogr

    parts = [struct.pack("<BII", 1, _WKB_POLYGON, 1 + len(holes))]
    for ring in [shell, *holes]:
        x, y = _xy(np.concatenate([ring, ring[:1]]))
        parts.append(struct.pack("<I", len(x)))
        parts.append(np.stack([x, y], axis=1).astype("<f8").tobytes())
    return ogr.CreateGeometryFromWkb(b"".join(parts))


def union_pieces(pieces: list):
    """The OGR polygon (pixel coordinates) of one region from its strip pieces, or None when
    the edges do not close into one shell with holes of the pieces' area (then use GEOS)."""
    try:
        a, b, twice_total = _segments(pieces)
    except ValueError as exc:   # not plain 2D polygons: GDAL's polygoniser never gave one
        log.debug("edge union: %s", exc)
        return None
    a, b = _shared_borders_cancelled(a, b)
    rings = _link(a, b) if len(a) else None
    del a, b
    if rings is None:
        log.debug("edge union: the boundary does not close into rings")
        return None
    areas = [_twice_area(r) for r in rings]
    shells = [i for i, area in enumerate(areas) if area > 0]
    if len(shells) != 1 or sum(areas) != twice_total:
        log.debug("edge union: %d shells, area %d vs %d", len(shells), sum(areas), twice_total)
        return None
    return _to_ogr(rings[shells[0]], [r for i, r in enumerate(rings) if i != shells[0]])
