"""Dask runs (issue 20): a LocalCluster of 2 worker processes gives the single-process output bit
for bit, for one raster over several blocks and for a mosaic of 4 tiles, polygons included; a
worker killed mid-run changes nothing; cancelling leaves nothing; ``resume`` reuses finished
blocks; bad schedulers and bad tiles fail before any work is sent."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr

pytest.importorskip("distributed")
from distributed import Client, LocalCluster  # noqa: E402

from model_core.distributed.blocks import plan_blocks, work_folder  # noqa: E402
from model_core.inference import Cancelled, SegmentOptions, segment  # noqa: E402
from model_core.inference.mosaic import mosaic_sources  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample" / "rotterdam_spacenet6_rgb.tif"
W, H, BLOCK = 900, 700, 256    # 3 x 2 blocks of the default model's 256 px patches


def _labels(path) -> np.ndarray:
    ds = gdal.Open(str(path))   # held while its band is read (GDAL's Python bindings)
    return ds.GetRasterBand(1).ReadAsArray()


def _polygons(path) -> list[tuple]:
    ds = ogr.Open(str(path))
    return sorted((f.GetField("class_id"), f.GetField("class_name"), round(f.GetField("area"), 6),
                   f.GetGeometryRef().Area()) for f in ds.GetLayer(0))


def _write(path: Path, array: np.ndarray, gt, wkt: str, nodata=None) -> Path:
    ds = gdal.GetDriverByName("GTiff").Create(str(path), array.shape[2], array.shape[1],
                                              array.shape[0], gdal.GDT_Byte)
    ds.SetGeoTransform(gt)
    ds.SetProjection(wkt)
    for i in range(array.shape[0]):
        ds.GetRasterBand(i + 1).WriteArray(array[i])
        if nodata is not None:
            ds.GetRasterBand(i + 1).SetNoDataValue(nodata)
    ds = None
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 900 x 700 px scene made of the bundled sample (mirrored to fill it), the same scene
    as 4 tiles, and the single-process result with polygons."""
    d = tmp_path_factory.mktemp("dask")
    src = gdal.Open(str(SAMPLE))
    img = src.ReadAsArray()
    big = np.concatenate([img, img[:, :, ::-1]], axis=2)
    big = np.concatenate([big, big[:, ::-1]], axis=1)[:, :H, :W]
    gt, wkt = src.GetGeoTransform(), src.GetProjection()
    raster = _write(d / "scene.tif", np.ascontiguousarray(big), gt, wkt)
    tiles = d / "tiles"
    tiles.mkdir()
    for r, (y0, y1) in enumerate([(0, 300), (300, H)]):
        for c, (x0, x1) in enumerate([(0, 450), (450, W)]):
            tgt = (gt[0] + x0 * gt[1], gt[1], 0.0, gt[3] + y0 * gt[5], 0.0, gt[5])
            _write(tiles / f"tile_{r}{c}.tif", np.ascontiguousarray(big[:, y0:y1, x0:x1]),
                   tgt, wkt)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # the workers' count below: sums add up in the same order
    try:
        ref = segment(SegmentOptions(str(raster), str(d / "one.tif"),
                                     vector=str(d / "one.gpkg"), min_area=20.0, device="cpu"))
    finally:
        torch.set_num_threads(threads)
    return {"dir": d, "raster": raster, "tiles": tiles, "ref": ref,
            "labels": _labels(d / "one.tif"), "polygons": _polygons(d / "one.gpkg")}


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes with a nanny each (a killed worker is restarted)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as c:
        with Client(c) as client:
            yield c, client


def _options(scene, out: Path, **kw) -> SegmentOptions:
    kw.setdefault("input", str(scene["raster"]))
    return SegmentOptions(output=str(out), device="cpu", block_size=BLOCK, threads=1, **kw)


def test_blocks_are_whole_patches_and_cover_the_window():
    blocks = plan_blocks((W, H), (0, 0, W, H), 256, 50, BLOCK)
    assert len(blocks) == 6
    covered = np.zeros((H, W), int)
    for b in blocks:
        x, y, w, h = b.window
        covered[y:y + h, x:x + w] += 1
    assert (covered == 1).all()
    sub = plan_blocks((W, H), (100, 50, 700, 600), 256, 50, BLOCK)
    assert sub[0].window[:2] == (100, 50)
    assert sum(b.window[2] * b.window[3] for b in sub) == 700 * 600
    with pytest.raises(ValueError, match="larger --block-size"):
        plan_blocks((W, H), (0, 0, W, H), 256, 50, 200)


def test_local_cluster_equals_one_process_bit_for_bit(scene, tmp_path):
    """``local:2`` starts its own LocalCluster; polygons come out the same too."""
    messages = []
    res = segment(_options(scene, tmp_path / "dk.tif", vector=str(tmp_path / "dk.gpkg"),
                           min_area=20.0, dask="local:2"),
                  progress=lambda f, m: messages.append(m))
    np.testing.assert_array_equal(_labels(tmp_path / "dk.tif"), scene["labels"])
    assert _polygons(tmp_path / "dk.gpkg") == scene["polygons"]
    ref = scene["ref"]
    assert (res.width, res.height, res.grid, res.patches) == (ref.width, ref.height, ref.grid,
                                                              ref.patches)
    assert res.class_pixels == ref.class_pixels
    one, dk = gdal.Open(str(scene["dir"] / "one.tif")), gdal.Open(str(tmp_path / "dk.tif"))
    assert dk.GetGeoTransform() == one.GetGeoTransform()
    assert dk.GetRasterBand(1).GetOverviewCount() == one.GetRasterBand(1).GetOverviewCount()
    assert any(m.startswith("block 6/6") for m in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dk.gpkg", "dk.tif", "dk.tif.aux.xml"]


def test_mosaic_of_tiles_equals_the_single_raster(scene, cluster, tmp_path):
    """A folder of 4 tiles and a list file of them: the cluster gives the in-process labels of
    the mosaic bit for bit, polygons too; the mosaic's labels are those of the single raster
    but where GDAL averages the contexts over tile borders a little differently (no seam)."""
    _, client = cluster
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        segment(_options(scene, tmp_path / "folder.tif", input=str(scene["tiles"]),
                         vector=str(tmp_path / "folder.gpkg"), min_area=20.0))
    finally:
        torch.set_num_threads(threads)
    mosaic = _labels(tmp_path / "folder.tif")
    assert (mosaic == scene["labels"]).mean() > 0.995
    listing = tmp_path / "tiles.txt"
    listing.write_text("# the four tiles\n" + "\n".join(
        os.path.relpath(t, tmp_path) for t in sorted(scene["tiles"].iterdir())) + "\n")
    segment(_options(scene, tmp_path / "list.tif", input=str(listing),
                     vector=str(tmp_path / "list.gpkg"), min_area=20.0,
                     dask=client.scheduler.address))
    np.testing.assert_array_equal(_labels(tmp_path / "list.tif"), mosaic)
    assert _polygons(tmp_path / "list.gpkg") == _polygons(tmp_path / "folder.gpkg")
    assert not work_folder(str(tmp_path / "list.tif")).exists()


def test_raster_placed_by_gcps_runs_on_the_cluster(scene, cluster, tmp_path):
    """The scene georeferenced by GCPs only: the workers read the warped VRT from the run's
    work folder and give the single raster's labels and georeferencing."""
    _, client = cluster
    src = gdal.Open(str(scene["raster"]))
    gt = src.GetGeoTransform()
    gcp = gdal.GetDriverByName("GTiff").CreateCopy(str(tmp_path / "scan.tif"), src)
    gcp.SetGCPs([gdal.GCP(gt[0] + c * gt[1], gt[3] + r * gt[5], 0, c, r)
                 for c, r in ((0, 0), (W, 0), (0, H), (W, H))], src.GetProjection())
    gcp = None
    assert gdal.Open(str(tmp_path / "scan.tif")).GetGeoTransform(can_return_null=True) is None
    segment(_options(scene, tmp_path / "g.tif", input=str(tmp_path / "scan.tif"),
                     dask=client.scheduler.address))
    out = gdal.Open(str(tmp_path / "g.tif"))
    assert out.GetGeoTransform() == pytest.approx(gt)
    # bilinear at the pixel centres of an unchanged grid: the scene's own pixels
    assert (_labels(tmp_path / "g.tif") == scene["labels"]).mean() > 0.999
    assert not work_folder(str(tmp_path / "g.tif")).exists()


def test_a_worker_killed_mid_run_changes_nothing(scene, cluster, tmp_path):
    c, client = cluster
    pids = client.run(os.getpid)
    out = tmp_path / "killed.tif"
    result, errors = {}, []

    def run():
        try:
            result["res"] = segment(_options(scene, out, dask=client.scheduler.address))
        except BaseException as exc:   # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        busy = [w for w, keys in client.processing().items()
                if any("fctl-block" in str(k) for k in keys)]
        parts = list(work_folder(str(out)).glob("*.part")) if work_folder(str(out)).exists() \
            else []
        if busy and parts:
            killed = pids[busy[0]]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    thread.join(300)
    assert killed is not None, "no block was seen running"
    assert not errors, errors
    np.testing.assert_array_equal(_labels(out), scene["labels"])
    assert not work_folder(str(out)).exists()
    client.wait_for_workers(2, timeout=60)   # the nanny restarted the killed worker


def test_cancelling_leaves_nothing(scene, cluster, tmp_path):
    _, client = cluster
    done = []
    out = tmp_path / "cancel.tif"
    with pytest.raises(Cancelled):
        segment(_options(scene, out, vector=str(tmp_path / "cancel.gpkg"),
                         dask=client.scheduler.address),
                progress=lambda f, m: done.append(m) if m.startswith("block") else None,
                is_cancelled=lambda: len(done) >= 1)
    deadline = time.monotonic() + 30   # a block still running on a worker stops by itself
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(tmp_path.iterdir()) == []


def test_resume_reuses_finished_blocks(scene, cluster, tmp_path, caplog):
    _, client = cluster
    out = tmp_path / "resume.tif"
    done = []
    with pytest.raises(Cancelled):
        segment(_options(scene, out, dask=client.scheduler.address, resume=True),
                progress=lambda f, m: done.append(m) if m.startswith("block") else None,
                is_cancelled=lambda: len(done) >= 2)
    work = work_folder(str(out))
    time.sleep(3)   # let blocks already running finish: they count as finished too
    kept = sorted(p.name for p in work.glob("block_*.tif"))
    assert len(kept) >= 2 and not list(work.glob("*.part")) and not out.exists()
    with pytest.raises(ValueError, match="another run"):
        segment(_options(scene, out, dask=client.scheduler.address, resume=True, tta=True))
    caplog.set_level(logging.INFO, logger="model_core.distributed.client")
    segment(_options(scene, out, dask=client.scheduler.address, resume=True))
    assert f"({len(kept)} finished before, {6 - len(kept)} to run)" in caplog.text
    np.testing.assert_array_equal(_labels(out), scene["labels"])
    assert not work.exists()


def test_unreachable_scheduler_fails_fast_and_leaves_nothing(scene, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        segment(_options(scene, tmp_path / "x.tif", dask="tcp://127.0.0.1:9"))
    assert time.monotonic() - t0 < 30
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="local:N or the scheduler's address"):
        segment(_options(scene, tmp_path / "x.tif", dask="my-cluster"))
    with pytest.raises(ValueError, match="number of worker processes"):
        segment(_options(scene, tmp_path / "x.tif", dask="local:0"))


def test_bad_tiles_are_refused_before_any_work_is_sent(scene, tmp_path):
    """A tile without a CRS among georeferenced ones, or different band counts: the tile check
    fails before the (unreachable) scheduler is even contacted."""
    src = gdal.Open(str(scene["tiles"] / "tile_00.tif"))
    arr, gt = src.ReadAsArray(), src.GetGeoTransform()
    for name, array, wkt in (("crs", arr, ""), ("bands", arr[:1], src.GetProjection())):
        folder = tmp_path / name
        folder.mkdir()
        _write(folder / "a.tif", arr, gt, src.GetProjection())
        _write(folder / "b.tif", np.ascontiguousarray(array), (gt[0] + 450, *gt[1:]), wkt)
        match = "has no CRS but" if name == "crs" else "band"
        with pytest.raises(ValueError, match=match):
            segment(_options(scene, tmp_path / f"{name}.tif", input=str(folder),
                             dask="tcp://127.0.0.1:9"))
        assert not (tmp_path / f"{name}.tif").exists()
        assert not work_folder(str(tmp_path / f"{name}.tif")).exists()
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    _write(nowhere / "a.tif", arr, gt, src.GetProjection())
    ds = gdal.GetDriverByName("GTiff").Create(str(nowhere / "b.tif"), 50, 50, 3, gdal.GDT_Byte)
    ds = None
    with pytest.raises(ValueError, match="b.tif has no geotransform or GCPs"):
        segment(_options(scene, tmp_path / "nowhere.tif", input=str(nowhere)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no raster tiles"):
        segment(_options(scene, tmp_path / "e.tif", input=str(empty)))
    with pytest.raises(ValueError, match="lies in the folder of tiles"):
        mosaic_sources(str(scene["tiles"]), [str(scene["tiles"] / "tile_00.tif")])


def test_tiles_in_two_crs_are_mosaicked_in_the_crs_most_have(scene, cluster, tmp_path):
    """A programme crossing a UTM zone boundary: the right-hand tiles delivered in EPSG:32632,
    one with nodata outside its turned footprint, one cut to a rectangle inside it without a
    nodata value; the left-hand tiles in EPSG:32631. The 32632 tiles are reprojected on the
    fly onto the grid of the 32631 tiles: the output is in EPSG:32631 on the single raster's
    pixel grid, the network reads the left tiles' pixels unchanged (the turned tiles' empty
    corners, by nodata or by the alpha band added to the tile without nodata, do not hide
    them) and the right ones' close to the original (two bilinear warps), and the cluster gives
    the in-process result."""
    import shutil

    folder = tmp_path / "zones"
    folder.mkdir()
    for t in sorted(scene["tiles"].iterdir()):
        if t.name.endswith("0.tif"):
            shutil.copy(t, folder / t.name)
            continue
        if t.name == "tile_01.tif":
            gdal.Warp(str(folder / t.name), str(t), dstSRS="EPSG:32632", xRes=0.5, yRes=0.5,
                      resampleAlg="bilinear", dstNodata=0)
            continue
        # the largest rectangle with a margin m inside the turned footprint (turned ~4 degrees)
        turned = gdal.Warp("", str(t), format="MEM", dstSRS="EPSG:32632", xRes=0.5, yRes=0.5,
                           resampleAlg="bilinear", dstAlpha=True)
        alpha = turned.GetRasterBand(4).ReadAsArray()
        m = next(m for m in range(1, 100) if (alpha[m:-m, m:-m] == 255).all())
        gdal.Translate(str(folder / t.name), turned, bandList=[1, 2, 3],
                       srcWin=(m, m, turned.RasterXSize - 2 * m, turned.RasterYSize - 2 * m))
        assert gdal.Open(str(folder / t.name)).GetRasterBand(1).GetNoDataValue() is None
    one = gdal.Open(str(scene["raster"]))
    ogt = one.GetGeoTransform()
    res = segment(_options(scene, tmp_path / "zones.tif", input=str(folder)))
    ds = gdal.Open(str(tmp_path / "zones.tif"))
    gt = ds.GetGeoTransform()
    assert "32631" in ds.GetProjection().split("AUTHORITY")[-1]
    assert gt[1] == ogt[1] and gt[5] == ogt[5]
    dx, dy = (gt[0] - ogt[0]) / ogt[1], (gt[3] - ogt[3]) / ogt[5]
    assert dx == pytest.approx(round(dx), abs=1e-6) and dy == pytest.approx(round(dy), abs=1e-6)
    dx, dy = -round(dx), -round(dy)
    assert dx >= 0 and dy >= 0
    out = _labels(tmp_path / "zones.tif")
    win = out[dy:dy + H, dx:dx + W]
    assert win.shape == (H, W)
    inside = np.s_[2:298, 452:W - 2], np.s_[340:H - 40, 490:W - 40]   # the right tiles' insides
    black = (one.ReadAsArray() == 0).all(0)     # the sample's few black pixels: nodata 0 above
    assert (win[:, :440] != res.nodata).all()
    assert all(((win[r] != res.nodata) | black[r]).all() for r in inside), \
        [((win[r] == res.nodata) & ~black[r]).sum() for r in inside]
    # what the network read: the left tiles' pixels exactly, the right ones' after two warps
    from model_core.inference.mosaic import build_mosaic

    (tmp_path / "vrt").mkdir()
    view = gdal.Open(build_mosaic(sorted(str(t) for t in folder.iterdir()),
                                  str(tmp_path / "vrt" / "mosaic.vrt")))
    assert view.RasterCount == 4
    seen = view.ReadAsArray(dx, dy, W, H)
    big = one.ReadAsArray()
    # (the last column of the left tiles is shared with the warped right tiles' edge)
    np.testing.assert_array_equal(seen[:3, :, :449], big[:, :, :449])
    assert (seen[3, :, :449] == 255).all()
    for r in inside:
        assert (seen[3][r] > 0).all()
        diff = np.abs(seen[(slice(0, 3), *r)].astype(int) - big[(slice(None), *r)]).mean()
        assert diff < 12, diff
    segment(_options(scene, tmp_path / "zones_dask.tif", input=str(folder),
                     dask=cluster[0].scheduler_address))
    np.testing.assert_array_equal(_labels(tmp_path / "zones_dask.tif"), out)


def test_tiles_placed_by_gcps_join_the_mosaic(scene, tmp_path):
    """Scanned sheets georeferenced in QGIS's Georeferencer without a new file carry GCPs, not a
    geotransform. GCP tiles are warped onto the grid of the north-up tiles (or, when every tile
    has GCPs, onto GDAL's suggested grid with square pixels); here the GCPs describe each tile's
    true grid, so the mosaic is the scene itself and the labels are the single raster's."""
    import shutil

    src = gdal.Open(str(scene["raster"]))
    big, ogt = src.ReadAsArray(), src.GetGeoTransform()

    def gcp_copy(tile: Path, out: Path) -> None:
        ds = gdal.Open(str(tile))
        gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
        gcps = [gdal.GCP(gt[0] + px * gt[1], gt[3] + ln * gt[5], 0, px, ln)
                for px, ln in ((0, 0), (w, 0), (0, h), (w, h), (w / 2, h / 3))]
        copy = gdal.Translate(str(out), ds, options="-a_ullr 0 0 0 0")
        copy = None
        copy = gdal.Open(str(out), gdal.GA_Update)
        copy.SetGCPs(gcps, ds.GetProjection())
        copy = None
        assert gdal.Open(str(out)).GetGeoTransform(can_return_null=True) is None

    for name, which in (("some", ("01", "11")), ("all", ("00", "01", "10", "11"))):
        folder = tmp_path / name
        folder.mkdir()
        for t in sorted(scene["tiles"].iterdir()):
            if t.stem[-2:] in which:
                gcp_copy(t, folder / t.name)
            else:
                shutil.copy(t, folder / t.name)
        res = segment(_options(scene, tmp_path / f"{name}.tif", input=str(folder)))
        ds = gdal.Open(str(tmp_path / f"{name}.tif"))
        gt = ds.GetGeoTransform()
        assert (ds.RasterXSize, ds.RasterYSize) == (W, H), name
        assert gt == pytest.approx(ogt, abs=1e-6), name
        assert "32631" in ds.GetProjection().split("AUTHORITY")[-1]
        out = _labels(tmp_path / f"{name}.tif")
        assert (out != res.nodata).mean() > 0.999
        assert (out == scene["labels"]).mean() > 0.99, name
    (tmp_path / "vrt").mkdir()
    from model_core.inference.mosaic import build_mosaic

    seen = gdal.Open(build_mosaic(sorted(str(t) for t in (tmp_path / "some").iterdir()),
                                  str(tmp_path / "vrt" / "m.vrt"))).ReadAsArray()
    assert seen.shape == (4, H, W)
    assert (np.abs(seen[:3].astype(int) - big) <= 1).mean() > 0.999


def test_tiles_named_differently_or_with_other_palettes_stay_in_the_mosaic(scene, tmp_path):
    """gdalbuildvrt leaves a tile out with a mere warning when its bands' colour names differ
    from the first tile's (one written as RGB, one as three grey bands) or, for paletted tiles,
    keeps the first tile's colour table for all. The first is read with the first tile's names,
    the second as each tile's colours; a tile GDAL would still leave out is an error naming it."""
    from model_core.inference.mosaic import build_mosaic

    src = gdal.Open(str(scene["raster"]))
    arr, gt, wkt = src.ReadAsArray(), src.GetGeoTransform(), src.GetProjection()
    folder = tmp_path / "names"
    folder.mkdir()
    for name, x0, x1, opts in (("a", 0, 450, []), ("b", 450, W, ["PHOTOMETRIC=MINISBLACK"])):
        ds = gdal.GetDriverByName("GTiff").Create(str(folder / f"{name}.tif"), x1 - x0, H, 3,
                                                  gdal.GDT_Byte, opts)
        ds.SetGeoTransform((gt[0] + x0 * gt[1], *gt[1:]))
        ds.SetProjection(wkt)
        for b in range(3):
            ds.GetRasterBand(b + 1).WriteArray(arr[b, :, x0:x1])
        ds = None
    assert gdal.Open(str(folder / "b.tif")).GetRasterBand(1).GetColorInterpretation() == \
        gdal.GCI_GrayIndex
    res = segment(_options(scene, tmp_path / "names.tif", input=str(folder)))
    out = _labels(tmp_path / "names.tif")
    assert (out != res.nodata).all()
    assert (out == scene["labels"]).mean() > 0.995

    pal = tmp_path / "pal"
    pal.mkdir()
    for i, colour in enumerate([(255, 0, 0, 255), (0, 0, 255, 255)]):
        ds = gdal.GetDriverByName("GTiff").Create(str(pal / f"t{i}.tif"), 300, 300, 1,
                                                  gdal.GDT_Byte)
        ds.SetGeoTransform((gt[0] + 300 * i * gt[1], *gt[1:]))
        ds.SetProjection(wkt)
        table = gdal.ColorTable()
        table.SetColorEntry(0, colour)
        table.SetColorEntry(1, (0, 255, 0, 255))
        ds.GetRasterBand(1).SetRasterColorTable(table)
        ds.GetRasterBand(1).SetRasterColorInterpretation(gdal.GCI_PaletteIndex)
        ds.GetRasterBand(1).WriteArray(np.zeros((300, 300), np.uint8))
        ds = None
    (tmp_path / "vrt").mkdir()
    tiles = [str(pal / "t0.tif"), str(pal / "t1.tif")]
    view = gdal.Open(build_mosaic(tiles, str(tmp_path / "vrt" / "pal.vrt"))).ReadAsArray()
    assert view.shape == (4, 300, 600)
    assert view[:, 0, 0].tolist() == [255, 0, 0, 255] and view[:, 0, 599].tolist() == [0, 0, 255,
                                                                                          255]
    res = segment(_options(scene, tmp_path / "pal.tif", input=str(pal)))
    assert (_labels(tmp_path / "pal.tif") != res.nodata).all()

    _write(pal / "zgrey.tif", np.full((1, 300, 300), 90, np.uint8),
           (gt[0] + 600 * gt[1], *gt[1:]), wkt)
    with pytest.raises(ValueError, match="left 1 tile.*zgrey.tif.*-expand rgb"):
        segment(_options(scene, tmp_path / "mixed.tif", input=str(pal)))
    assert not (tmp_path / "mixed.tif").exists()


def test_gaps_between_tiles_are_nodata(scene, tmp_path):
    """Tiles without a nodata value and a gap between them: the mosaic marks the gap invalid
    (an alpha band), and the output is nodata there, labels on both tiles."""
    src = gdal.Open(str(scene["tiles"] / "tile_00.tif"))
    arr, gt = src.ReadAsArray(), src.GetGeoTransform()
    folder = tmp_path / "gappy"
    folder.mkdir()
    _write(folder / "a.tif", np.ascontiguousarray(arr[:, :, :200]), gt, src.GetProjection())
    _write(folder / "b.tif", np.ascontiguousarray(arr[:, :, 250:450]),
           (gt[0] + 300 * gt[1], *gt[1:]), src.GetProjection())
    res = segment(_options(scene, tmp_path / "gappy.tif", input=str(folder)))
    out = _labels(tmp_path / "gappy.tif")
    assert out.shape == (300, 500) and (res.width, res.height) == (500, 300)
    assert (out[:, 200:300] == res.nodata).all()
    assert (out[:, :200] != res.nodata).all() and (out[:, 300:] != res.nodata).all()
    ds = gdal.Open(str(tmp_path / "gappy.tif"))
    assert ds.GetGeoTransform() == pytest.approx(gt)
