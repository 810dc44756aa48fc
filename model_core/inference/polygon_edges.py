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

Memory: a few int64 arrays of the region's segments (about 60 bytes per vertex at the peak),
against about 260-300 bytes per vertex for GEOS's cascaded union, which set the polygon step's
peak on rasters with a very large region. :func:`union_pieces` returns None when the result
is not one shell with its holes of the pieces' total area (it never was in the tests); the
caller then falls back to GEOS.
"""

from __future__ import annotations

import logging
import struct

import numpy as np

log = logging.getLogger(__name__)

_WKB_POLYGON = 3


def _rings(piece) -> list[np.ndarray]:
    """(n, 2) int64 vertices of each ring of an OGR polygon (closing vertex dropped), exterior
    first, read from its WKB without a Python object per vertex."""
    from osgeo import ogr

    buf = piece.ExportToWkb(ogr.wkbNDR)
    gtype = struct.unpack_from("<I", buf, 1)[0]
    if gtype != _WKB_POLYGON:
        raise ValueError(f"expected a 2D polygon, got WKB type {gtype}")
    (nrings,) = struct.unpack_from("<I", buf, 5)
    off, out = 9, []
    for _ in range(nrings):
        (n,) = struct.unpack_from("<I", buf, off)
        off += 4
        pts = np.frombuffer(buf, "<f8", 2 * n, off).reshape(n, 2)
        off += 16 * n
        out.append(np.rint(pts[:-1]).astype(np.int64))
    return out


def _twice_area(v: np.ndarray) -> int:
    x, y = v[:, 0], v[:, 1]
    return int(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _segments(pieces: list) -> tuple[np.ndarray, int]:
    """(m, 4) directed segments x0, y0, x1, y1 of every ring, interior on the left; and twice
    the pieces' total area."""
    segs, total = [], 0
    for piece in pieces:
        for k, ring in enumerate(_rings(piece)):
            a2 = _twice_area(ring)
            if (a2 < 0) == (k == 0):            # exterior counter-clockwise, holes clockwise
                ring = ring[::-1]
                a2 = -a2
            total += a2
            segs.append(np.concatenate([ring, np.roll(ring, -1, axis=0)], axis=1))
    return np.concatenate(segs), total


def _split_horizontal(s: np.ndarray) -> np.ndarray:
    """Horizontal segments cut at every segment endpoint on their row."""
    hz = s[:, 1] == s[:, 3]
    h, rest = s[hz], s[~hz]
    if not len(h):
        return s
    # every endpoint on a row, as sortable (y, x) keys
    ends = np.unique(np.concatenate([h[:, [1, 0]], h[:, [3, 2]]]), axis=0)
    lo, hi = np.minimum(h[:, 0], h[:, 2]), np.maximum(h[:, 0], h[:, 2])
    key = ends[:, 0] * (1 << 32) + ends[:, 1]
    first = np.searchsorted(key, h[:, 1] * (1 << 32) + lo)       # the segment's own start
    last = np.searchsorted(key, h[:, 1] * (1 << 32) + hi)        # its end
    count = last - first                                           # pieces after cutting
    idx = np.repeat(np.arange(len(h)), count)
    step = np.arange(len(idx)) - np.repeat(np.cumsum(count) - count, count)
    xa, xb = ends[first[idx] + step, 1], ends[first[idx] + step + 1, 1]
    fwd = (h[:, 2] > h[:, 0])[idx]
    y = h[idx, 1]
    cut = np.stack([np.where(fwd, xa, xb), y, np.where(fwd, xb, xa), y], axis=1)
    return np.concatenate([rest, cut])


def _cancel(s: np.ndarray) -> np.ndarray:
    """Drop every segment whose reverse is also there (a border two pieces share)."""
    a, b = s[:, :2], s[:, 2:]
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    lo, hi = np.where(swap[:, None], b, a), np.where(swap[:, None], a, b)
    order = np.lexsort((hi[:, 1], hi[:, 0], lo[:, 1], lo[:, 0]))
    k = np.concatenate([lo, hi], axis=1)[order]
    same = np.all(k[1:] == k[:-1], axis=1)
    drop = np.zeros(len(s), bool)
    drop[order[1:][same]] = True
    drop[order[:-1][same]] = True
    return s[~drop]


def _link(s: np.ndarray) -> list[np.ndarray] | None:
    """The segments linked into rings (vertex arrays, collinear vertices dropped); None when
    they do not form closed rings."""
    n = len(s)
    start = s[:, 0] * (1 << 32) + s[:, 1]
    end = s[:, 2] * (1 << 32) + s[:, 3]
    order = np.argsort(start, kind="stable")
    sk = start[order]
    lo, hi = np.searchsorted(sk, end, "left"), np.searchsorted(sk, end, "right")
    if np.any(hi == lo):
        return None
    succ = order[lo]
    two = np.nonzero(hi - lo == 2)[0]
    if np.any(hi - lo > 2):
        return None
    if len(two):
        d_in = s[two, 2:] - s[two, :2]
        c1, c2 = order[lo[two]], order[lo[two] + 1]
        d1, d2 = s[c1, 2:] - s[c1, :2], s[c2, 2:] - s[c2, :2]
        cross1 = d_in[:, 0] * d1[:, 1] - d_in[:, 1] * d1[:, 0]
        cross2 = d_in[:, 0] * d2[:, 1] - d_in[:, 1] * d2[:, 0]
        # the rightmost turn: go round the pixel that is not the region's, so that each ring
        # parts the region from one outside or hole only (rings touch, never themselves)
        succ[two] = np.where(np.sign(cross1) <= np.sign(cross2), c1, c2)
    if len(np.unique(succ)) != n:
        return None
    seen = np.zeros(n, bool)
    rings = []
    for i in range(n):
        if seen[i]:
            continue
        cyc = []
        j = i
        while not seen[j]:
            seen[j] = True
            cyc.append(j)
            j = int(succ[j])
        if j != i:
            return None
        v = s[np.asarray(cyc), :2]
        d = np.roll(v, -1, axis=0) - v
        dprev = np.roll(d, 1, axis=0)
        turn = (dprev[:, 0] * d[:, 1] - dprev[:, 1] * d[:, 0]) != 0
        v = v[turn]
        if len(v) < 4:
            return None
        rings.append(v)
    return rings


def _to_ogr(shell: np.ndarray, holes: list[np.ndarray]):
    from osgeo import ogr

    parts = [struct.pack("<BII", 1, _WKB_POLYGON, 1 + len(holes))]
    for ring in [shell, *holes]:
        closed = np.concatenate([ring, ring[:1]]).astype("<f8")
        parts.append(struct.pack("<I", len(closed)))
        parts.append(closed.tobytes())
    return ogr.CreateGeometryFromWkb(b"".join(parts))


def union_pieces(pieces: list):
    """The OGR polygon (pixel coordinates) of one region from its strip pieces, or None when
    the edges do not close into one shell with holes of the pieces' area (then use GEOS)."""
    try:
        s, twice_total = _segments(pieces)
    except ValueError as exc:   # not plain 2D polygons: GDAL's polygoniser never gave one
        log.debug("edge union: %s", exc)
        return None
    s = _cancel(_split_horizontal(s))
    rings = _link(s) if len(s) else None
    if rings is None:
        log.debug("edge union: the boundary does not close into rings")
        return None
    areas = [_twice_area(r) for r in rings]
    shells = [i for i, a in enumerate(areas) if a > 0]
    if len(shells) != 1 or sum(areas) != twice_total:
        log.debug("edge union: %d shells, area %d vs %d", len(shells), sum(areas), twice_total)
        return None
    return _to_ogr(rings[shells[0]], [r for i, r in enumerate(rings) if i != shells[0]])
