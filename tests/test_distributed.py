"""Dask runs (issue 20): a LocalCluster of 2 worker processes gives the single-process output bit
for bit, for one raster over several blocks and for a mosaic of 4 tiles, polygons included; a
worker killed mid-run changes nothing; cancelling leaves nothing; ``resume`` reuses finished
blocks; bad schedulers and bad tiles fail before any work is sent. The scene and the cluster are
in ``dask_scene.py``; mosaics of unlike tiles in ``test_mosaic.py``."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from osgeo import gdal, ogr

pytest.importorskip("distributed")
import distributed  # noqa: E402,F401 (skips above when absent)

from model_core.distributed.blocks import plan_blocks, work_folder  # noqa: E402
from model_core.inference import Cancelled, segment  # noqa: E402
from model_core.inference.mosaic import mosaic_sources  # noqa: E402

from dask_scene import (BLOCK, H, W, cluster, labels_of, polygons_of, run_options,  # noqa: E402,F401
                        scene, write_raster)


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
    res = segment(run_options(scene, tmp_path / "dk.tif", vector=str(tmp_path / "dk.gpkg"),
                           min_area=20.0, dask="local:2"),
                  progress=lambda f, m: messages.append(m))
    np.testing.assert_array_equal(labels_of(tmp_path / "dk.tif"), scene["labels"])
    assert polygons_of(tmp_path / "dk.gpkg") == scene["polygons"]
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
        segment(run_options(scene, tmp_path / "folder.tif", input=str(scene["tiles"]),
                         vector=str(tmp_path / "folder.gpkg"), min_area=20.0))
    finally:
        torch.set_num_threads(threads)
    mosaic = labels_of(tmp_path / "folder.tif")
    assert (mosaic == scene["labels"]).mean() > 0.995
    listing = tmp_path / "tiles.txt"
    listing.write_text("# the four tiles\n" + "\n".join(
        os.path.relpath(t, tmp_path) for t in sorted(scene["tiles"].iterdir())) + "\n")
    segment(run_options(scene, tmp_path / "list.tif", input=str(listing),
                     vector=str(tmp_path / "list.gpkg"), min_area=20.0,
                     dask=client.scheduler.address))
    np.testing.assert_array_equal(labels_of(tmp_path / "list.tif"), mosaic)
    assert polygons_of(tmp_path / "list.gpkg") == polygons_of(tmp_path / "folder.gpkg")
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
    segment(run_options(scene, tmp_path / "g.tif", input=str(tmp_path / "scan.tif"),
                     dask=client.scheduler.address))
    out = gdal.Open(str(tmp_path / "g.tif"))
    assert out.GetGeoTransform() == pytest.approx(gt)
    # bilinear at the pixel centres of an unchanged grid: the scene's own pixels
    assert (labels_of(tmp_path / "g.tif") == scene["labels"]).mean() > 0.999
    assert not work_folder(str(tmp_path / "g.tif")).exists()


def test_a_worker_killed_mid_run_changes_nothing(scene, cluster, tmp_path):
    c, client = cluster
    pids = client.run(os.getpid)
    out = tmp_path / "killed.tif"
    result, errors = {}, []

    def run():
        try:
            result["res"] = segment(run_options(scene, out, dask=client.scheduler.address))
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
    np.testing.assert_array_equal(labels_of(out), scene["labels"])
    assert not work_folder(str(out)).exists()
    client.wait_for_workers(2, timeout=60)   # the nanny restarted the killed worker


def test_cancelling_leaves_nothing(scene, cluster, tmp_path):
    _, client = cluster
    done = []
    out = tmp_path / "cancel.tif"
    with pytest.raises(Cancelled):
        segment(run_options(scene, out, vector=str(tmp_path / "cancel.gpkg"),
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
        segment(run_options(scene, out, dask=client.scheduler.address, resume=True),
                progress=lambda f, m: done.append(m) if m.startswith("block") else None,
                is_cancelled=lambda: len(done) >= 2)
    work = work_folder(str(out))
    time.sleep(3)   # let blocks already running finish: they count as finished too
    kept = sorted(p.name for p in work.glob("block_*.tif"))
    assert len(kept) >= 2 and not list(work.glob("*.part")) and not out.exists()
    with pytest.raises(ValueError, match="another run"):
        segment(run_options(scene, out, dask=client.scheduler.address, resume=True, tta=True))
    caplog.set_level(logging.INFO, logger="model_core.distributed.client")
    segment(run_options(scene, out, dask=client.scheduler.address, resume=True))
    assert f"({len(kept)} finished before, {6 - len(kept)} to run)" in caplog.text
    np.testing.assert_array_equal(labels_of(out), scene["labels"])
    assert not work.exists()


def test_unreachable_scheduler_fails_fast_and_leaves_nothing(scene, tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        segment(run_options(scene, tmp_path / "x.tif", dask="tcp://127.0.0.1:9"))
    assert time.monotonic() - t0 < 30
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="local:N or the scheduler's address"):
        segment(run_options(scene, tmp_path / "x.tif", dask="my-cluster"))
    with pytest.raises(ValueError, match="number of worker processes"):
        segment(run_options(scene, tmp_path / "x.tif", dask="local:0"))


def test_bad_tiles_are_refused_before_any_work_is_sent(scene, tmp_path):
    """A tile without a CRS among georeferenced ones, or different band counts: the tile check
    fails before the (unreachable) scheduler is even contacted."""
    src = gdal.Open(str(scene["tiles"] / "tile_00.tif"))
    arr, gt = src.ReadAsArray(), src.GetGeoTransform()
    for name, array, wkt in (("crs", arr, ""), ("bands", arr[:1], src.GetProjection())):
        folder = tmp_path / name
        folder.mkdir()
        write_raster(folder / "a.tif", arr, gt, src.GetProjection())
        write_raster(folder / "b.tif", np.ascontiguousarray(array), (gt[0] + 450, *gt[1:]), wkt)
        match = "has no CRS but" if name == "crs" else "band"
        with pytest.raises(ValueError, match=match):
            segment(run_options(scene, tmp_path / f"{name}.tif", input=str(folder),
                             dask="tcp://127.0.0.1:9"))
        assert not (tmp_path / f"{name}.tif").exists()
        assert not work_folder(str(tmp_path / f"{name}.tif")).exists()
    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    write_raster(nowhere / "a.tif", arr, gt, src.GetProjection())
    ds = gdal.GetDriverByName("GTiff").Create(str(nowhere / "b.tif"), 50, 50, 3, gdal.GDT_Byte)
    ds = None
    with pytest.raises(ValueError, match="b.tif has no geotransform or GCPs"):
        segment(run_options(scene, tmp_path / "nowhere.tif", input=str(nowhere)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no raster tiles"):
        segment(run_options(scene, tmp_path / "e.tif", input=str(empty)))
    with pytest.raises(ValueError, match="lies in the folder of tiles"):
        mosaic_sources(str(scene["tiles"]), [str(scene["tiles"] / "tile_00.tif")])
