"""Polygons and sieve in bounded memory: strips and tiles give what one pass over the raster
gives (GDAL's polygoniser and sieve filter on the whole band), on rasters made here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal, ogr, osr

from model_core.checkpoint import ClassInfo
from model_core.inference import polygons as poly_mod
from model_core.inference.polygon_sieve import sieve_bands
from model_core.inference.polygon_strips import iter_regions, polygon_parts
from model_core.inference.polygons import polygonize, sieve

CLASSES = [ClassInfo(i, f"c{i}", (i, i, i)) for i in range(6)]
NODATA = 255


def _tif(path: Path, cls: np.ndarray, gt=(500000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5),
         epsg: int | None = 32631, nodata: int | None = NODATA) -> Path:
    h, w = cls.shape
    ds = gdal.GetDriverByName("GTiff").Create(str(path), w, h, 1, gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        ds.SetProjection(srs.ExportToWkt())
    band = ds.GetRasterBand(1)
    if nodata is not None:
        band.SetNoDataValue(nodata)
    band.WriteArray(cls.astype(np.uint8))
    ds = None
    return path


def _one_pass(path: Path) -> list[tuple[int, ogr.Geometry]]:
    """The reference: gdal.Polygonize over the whole band, invalid rings repaired as the
    module does."""
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    mem = ogr.GetDriverByName("Memory").CreateDataSource("")   # keep: owns the layer
    lyr = mem.CreateLayer("r", None, ogr.wkbPolygon)
    lyr.CreateField(ogr.FieldDefn("v", ogr.OFTInteger))
    assert gdal.Polygonize(band, band.GetMaskBand(), lyr, 0, []) == 0
    out = []
    for f in lyr:
        g = f.GetGeometryRef()
        for part in ([g.Clone()] if g.IsValid() else polygon_parts(g.MakeValid())):
            out.append((f.GetField(0), part))
    return out


def _read_gpkg(path: Path) -> list[tuple[int, str, float, ogr.Geometry]]:
    ds = ogr.Open(str(path))
    lyr = ds.GetLayer(0)
    return [(f.GetField("class_id"), f.GetField("class_name"), f.GetField("area"),
             f.GetGeometryRef().Clone()) for f in lyr]


def _assert_same_polygons(got: list[tuple[int, ogr.Geometry]],
                          ref: list[tuple[int, ogr.Geometry]]) -> None:
    """Same multiset of (class, polygon) up to vertex order: each polygon matches one reference
    polygon of its class (nearest by area and centroid, each used once) whose symmetric
    difference with it is empty and which has as many rings."""
    assert len(got) == len(ref)

    def table(items):
        return np.array([(c, g.GetArea(), g.Centroid().GetX(), g.Centroid().GetY())
                         for c, g in items])

    t_ref, t_got = table(ref), table(got)
    scale = np.abs(t_ref[:, 1:]).max(axis=0) + 1e-12
    used = np.zeros(len(ref), bool)
    for (c, g), row in zip(got, t_got):
        d = np.abs((t_ref[:, 1:] - row[1:]) / scale).sum(axis=1)
        d[(t_ref[:, 0] != c) | used] = np.inf
        i = int(np.argmin(d))
        assert d[i] < 1e-6, f"no one-pass polygon of class {c} matches one of area {row[1]}"
        used[i] = True
        r = ref[i][1]
        assert g.IsValid() and g.GetGeometryCount() == r.GetGeometryCount()
        assert g.SymDifference(r).GetArea() <= 1e-9 * max(r.GetArea(), 1e-12)


def _shapes() -> np.ndarray:
    """Regions crossing many strips: a ring with a hole holding an island with its own hole, a
    U whose arms only meet strips below, a diagonal staircase (4-connected: one region per
    step), a spiral, nodata, and a frame as large as the raster."""
    h, w = 64, 48
    a = np.zeros((h, w), np.uint8)                 # class 0: the frame around everything
    a[2:30, 2:30] = 1                              # ring of class 1 ...
    a[6:26, 6:26] = 2                              # ... around a hole of class 2 ...
    a[10:22, 10:22] = 3                            # ... around an island of class 3 ...
    a[14:18, 14:18] = 2                            # ... with a hole of class 2
    a[33:60, 4:8] = 4                              # U: left arm
    a[33:60, 16:20] = 4                            # right arm
    a[56:60, 4:20] = 4                             # the bottom joining them
    for i in range(12):                            # staircase touching only at corners
        a[33 + 2 * i:35 + 2 * i, 24 + i] = 5
    a[3:28, 34:46] = 3                             # spiral of class 1 in a class-3 block
    a[5:7, 36:44] = 1
    a[5:26, 42:44] = 1
    a[24:26, 36:44] = 1
    a[9:26, 36:38] = 1
    a[9:11, 36:41] = 1
    a[9:22, 39:41] = 1
    a[40:44, 30:34] = NODATA                       # a nodata hole in the frame
    a[62:, :] = NODATA                             # nodata bottom rows
    a[0, 10] = 2                                   # single pixels on the raster's edges
    a[61, 47] = 1
    return a


def _random_blocks(h: int = 150, w: int = 200, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.kron(rng.integers(0, 6, (h // 10 + 1, w // 10 + 1)), np.ones((10, 10), int))[:h, :w]
    specks = rng.random((h, w)) < 0.03
    a[specks] = rng.integers(0, 6, specks.sum())
    a[rng.random((h, w)) < 0.01] = NODATA
    a[:20, :30] = NODATA
    return a.astype(np.uint8)


@pytest.fixture(params=["geos", "edges"])
def union(request, monkeypatch):
    """Regions crossing strips unioned by GEOS, or by edge cancellation (every region, and it
    must succeed: no silent fallback to GEOS)."""
    if request.param == "edges":
        from model_core.inference import polygon_edges, polygon_strips

        real = polygon_edges.union_pieces

        def must_close(pieces):
            merged = real(pieces)
            assert merged is not None, "the edge union fell back to GEOS"
            return merged

        monkeypatch.setattr(polygon_strips, "EDGE_UNION_VERTICES", 0)
        monkeypatch.setattr(polygon_edges, "union_pieces", must_close)
    return request.param


@pytest.mark.parametrize("rows", [1, 3, 7, 64])
def test_strip_regions_equal_one_pass(tmp_path, rows, union):
    """iter_regions on strips of 1 to 64 rows: the polygons of one whole-band Polygonize."""
    a = _shapes()
    path = _tif(tmp_path / "s.tif", a, gt=(0.0, 1.0, 0.0, 0.0, 0.0, 1.0), epsg=None)
    ds = gdal.Open(str(path))
    got = list(iter_regions(ds.GetRasterBand(1), strip_pixels=rows * a.shape[1]))
    assert all(g.IsValid() for _, g, known in got if known)
    got = [(v, p) for v, g, _ in got for p in ([g] if g.IsValid() else
                                                polygon_parts(g.MakeValid()))]
    _assert_same_polygons(got, _one_pass(path))
    # the ring (class 1, one hole) and the U (class 4, no hole) are single polygons
    rings = {v: [g.GetGeometryCount() for c, g in got if c == v] for v in (1, 4, 5)}
    assert sorted(rings[4]) == [1] and len(rings[5]) == 12
    assert 2 in rings[1]


@pytest.mark.parametrize("gt,epsg", [
    ((500000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5), 32631),     # north-up, metres
    ((2.0, 1e-4, 0.0, 48.0, 0.0, -1e-4), 4326),              # degrees: areas on the ellipsoid
    ((100.0, 2.0, 0.5, 300.0, 0.25, -2.0), None),            # rotated, no CRS: areas in pixels
])
def test_polygonize_in_strips_equals_one_pass(tmp_path, monkeypatch, gt, epsg, union):
    """The GeoPackage written strip by strip (7 rows, transactions of 50 features) holds the
    one-pass polygons, with the right class ids, names and areas, and a spatial index."""
    monkeypatch.setattr(poly_mod, "TRANSACTION_FEATURES", 50)
    a = _random_blocks()
    path = _tif(tmp_path / "r.tif", a, gt=gt, epsg=epsg)
    gpkg = tmp_path / "r.gpkg"
    n = polygonize(path, gpkg, "classes", CLASSES, strip_pixels=7 * a.shape[1])
    feats = _read_gpkg(gpkg)
    assert n == len(feats) > 300
    _assert_same_polygons([(c, g) for c, _, _, g in feats], _one_pass(path))
    px = abs(gt[1] * gt[5] - gt[2] * gt[4])
    for cid, name, area, geom in feats:
        assert name == f"c{cid}"
        if epsg is None:
            assert area == pytest.approx(geom.GetArea() / px)
        elif epsg == 32631:
            assert area == pytest.approx(geom.GetArea())
    if epsg == 4326:   # about 7.4 m x 11.1 m per pixel at 48 N
        total = sum(f[2] for f in feats)
        assert total == pytest.approx(int((a != NODATA).sum()) * 7.45 * 11.12, rel=0.01)
    else:
        per_class = Counter()
        for cid, _, area, _ in feats:
            per_class[cid] += area
        for c in range(6):
            want = (a == c).sum() * (1.0 if epsg is None else px)
            assert per_class[c] == pytest.approx(want)
    ds = ogr.Open(str(gpkg))
    sql = ds.ExecuteSQL("SELECT COUNT(*) FROM rtree_classes_geom")
    assert sql.GetNextFeature().GetField(0) == n   # the spatial index holds every feature
    ds.ReleaseResultSet(sql)


def _one_pass_sieve(path: Path, threshold: int) -> np.ndarray:
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    mem = gdal.GetDriverByName("MEM").CreateCopy("", ds)
    assert gdal.SieveFilter(band, band.GetMaskBand(), mem.GetRasterBand(1), threshold, 4) == 0
    return mem.GetRasterBand(1).ReadAsArray()


@pytest.mark.parametrize("threshold", [2, 5, 12])
def test_tiled_sieve_removes_the_regions_one_pass_removes(tmp_path, threshold):
    """Tiles of 16 px: exactly the regions one pass removes are removed (judged by their
    whole size, also when they cross tiles); only the neighbour that absorbs one may differ,
    where two large neighbours border it and a window cuts one of them. These 10 px blocks of
    equal sizes, cut by every window, are the worst case: still over 90 % agree."""
    a = _random_blocks(seed=threshold)
    path = _tif(tmp_path / "n.tif", a)
    ref = _one_pass_sieve(path, threshold)
    src = gdal.Open(str(path))
    mem = gdal.GetDriverByName("MEM").Create("", a.shape[1], a.shape[0], 1, gdal.GDT_Byte)
    sieve_bands(src.GetRasterBand(1), mem.GetRasterBand(1), threshold, tile=16)
    got = mem.GetRasterBand(1).ReadAsArray()
    changed_ref, changed_got = ref != a, got != a
    assert np.array_equal(changed_ref, changed_got)       # the same pixels were sieved
    assert changed_ref.sum() > 100
    assert (got != ref).sum() <= 0.1 * changed_ref.sum()
    assert np.array_equal(got == NODATA, a == NODATA)


def test_sieve_files_in_place_and_to_a_new_file(tmp_path):
    """sieve() to a new GeoTIFF and in place give the same classes, keep nodata and the
    georeferencing; on blocks with specks it equals one pass (one window); in small tiles it
    removes the same specks and can differ only where a speck borders two blocks."""
    rng = np.random.default_rng(3)
    blocks = np.kron(rng.integers(0, 6, (30, 30)), np.ones((40, 40), int)).astype(np.uint8)
    a = blocks.copy()
    a[rng.random(a.shape) < 0.002] = 5       # specks of one pixel: one neighbour each
    a[100:140, 200:260] = NODATA
    path = _tif(tmp_path / "in.tif", a)
    ref = _one_pass_sieve(path, 4)
    sieve(path, tmp_path / "out.tif", 4)
    out = gdal.Open(str(tmp_path / "out.tif"))
    assert out.GetGeoTransform() == gdal.Open(str(path)).GetGeoTransform()
    assert out.GetRasterBand(1).GetNoDataValue() == NODATA
    got = out.GetRasterBand(1).ReadAsArray()
    assert np.array_equal(got, ref) and not np.array_equal(got, a)
    mem = gdal.GetDriverByName("MEM").Create("", a.shape[1], a.shape[0], 1, gdal.GDT_Byte)
    src = gdal.Open(str(path))   # keep the dataset alive while its band is used
    sieve_bands(src.GetRasterBand(1), mem.GetRasterBand(1), 4, tile=100)
    tiled = mem.GetRasterBand(1).ReadAsArray()   # 144 tiles: the same specks go ...
    assert np.array_equal(tiled != a, ref != a)
    # ... into the same neighbour, but for specks on a block edge (two large neighbours)
    edge = np.zeros(a.shape, bool)
    edge[:, 1:] |= blocks[:, 1:] != blocks[:, :-1]
    edge[:, :-1] |= blocks[:, 1:] != blocks[:, :-1]
    edge[1:] |= blocks[1:] != blocks[:-1]
    edge[:-1] |= blocks[1:] != blocks[:-1]
    assert not np.any((tiled != ref) & ~edge)
    src = None
    sieve(path, None, 4)
    assert np.array_equal(gdal.Open(str(path)).GetRasterBand(1).ReadAsArray(), ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif", "out.tif"]


def test_polygon_bench_rows(tmp_path):
    """The bench's polygon rows: each size made and measured in its own process; the strip
    implementation finds the polygons the former one-pass one finds."""
    from model_core.bench.polygons import bench_polygons, parse_sizes, to_markdown

    assert parse_sizes("300, 400x200,") == [(300, 300), (400, 200)]
    with pytest.raises(ValueError, match="100000x10000"):
        parse_sizes("big")
    rows = bench_polygons([(400, 200)], tmp_path, one_pass=True)
    new, old = rows["400x200"], rows["400x200 one pass"]
    assert new["polygons"] == old["polygons"] > 5
    assert new["peak_rss_mb"] > 10 and new["total_s"] > 0
    assert "| 400x200 one pass |" in to_markdown(rows)
