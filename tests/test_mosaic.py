"""Mosaics of tiles that are not alike (``model_core/inference/mosaic.py``) on the Dask tests'
scene: tiles in several CRSs, tiles placed by GCPs, bands named otherwise, paletted tiles with
different colour tables, gaps between tiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

pytest.importorskip("distributed")
from dask_scene import H, W, cluster, labels_of, run_options, scene, write_raster  # noqa: E402,F401

from model_core.inference import segment  # noqa: E402


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
    res = segment(run_options(scene, tmp_path / "zones.tif", input=str(folder)))
    ds = gdal.Open(str(tmp_path / "zones.tif"))
    gt = ds.GetGeoTransform()
    assert "32631" in ds.GetProjection().split("AUTHORITY")[-1]
    assert gt[1] == ogt[1] and gt[5] == ogt[5]
    dx, dy = (gt[0] - ogt[0]) / ogt[1], (gt[3] - ogt[3]) / ogt[5]
    assert dx == pytest.approx(round(dx), abs=1e-6) and dy == pytest.approx(round(dy), abs=1e-6)
    dx, dy = -round(dx), -round(dy)
    assert dx >= 0 and dy >= 0
    out = labels_of(tmp_path / "zones.tif")
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
    valid = seen[3] == 255    # wherever the mosaic says it has data, it has the scene's
    assert np.abs(seen[:3].astype(int) - big)[:, valid].mean() < 12
    for r in inside:
        assert (seen[3][r] > 0).all()
        diff = np.abs(seen[(slice(0, 3), *r)].astype(int) - big[(slice(None), *r)]).mean()
        assert diff < 12, diff
    segment(run_options(scene, tmp_path / "zones_dask.tif", input=str(folder),
                     dask=cluster[0].scheduler_address))
    np.testing.assert_array_equal(labels_of(tmp_path / "zones_dask.tif"), out)


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
        res = segment(run_options(scene, tmp_path / f"{name}.tif", input=str(folder)))
        ds = gdal.Open(str(tmp_path / f"{name}.tif"))
        gt = ds.GetGeoTransform()
        assert (ds.RasterXSize, ds.RasterYSize) == (W, H), name
        assert gt == pytest.approx(ogt, abs=1e-6), name
        assert "32631" in ds.GetProjection().split("AUTHORITY")[-1]
        out = labels_of(tmp_path / f"{name}.tif")
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
    res = segment(run_options(scene, tmp_path / "names.tif", input=str(folder)))
    out = labels_of(tmp_path / "names.tif")
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
    res = segment(run_options(scene, tmp_path / "pal.tif", input=str(pal)))
    assert (labels_of(tmp_path / "pal.tif") != res.nodata).all()

    write_raster(pal / "zgrey.tif", np.full((1, 300, 300), 90, np.uint8),
           (gt[0] + 600 * gt[1], *gt[1:]), wkt)
    with pytest.raises(ValueError, match="left 1 tile.*zgrey.tif.*-expand rgb"):
        segment(run_options(scene, tmp_path / "mixed.tif", input=str(pal)))
    assert not (tmp_path / "mixed.tif").exists()


def test_gaps_between_tiles_are_nodata(scene, tmp_path):
    """Tiles without a nodata value and a gap between them: the mosaic marks the gap invalid
    (an alpha band), and the output is nodata there, labels on both tiles."""
    src = gdal.Open(str(scene["tiles"] / "tile_00.tif"))
    arr, gt = src.ReadAsArray(), src.GetGeoTransform()
    folder = tmp_path / "gappy"
    folder.mkdir()
    write_raster(folder / "a.tif", np.ascontiguousarray(arr[:, :, :200]), gt, src.GetProjection())
    write_raster(folder / "b.tif", np.ascontiguousarray(arr[:, :, 250:450]),
           (gt[0] + 300 * gt[1], *gt[1:]), src.GetProjection())
    res = segment(run_options(scene, tmp_path / "gappy.tif", input=str(folder)))
    out = labels_of(tmp_path / "gappy.tif")
    assert out.shape == (300, 500) and (res.width, res.height) == (500, 300)
    assert (out[:, 200:300] == res.nodata).all()
    assert (out[:, :200] != res.nodata).all() and (out[:, 300:] != res.nodata).all()
    ds = gdal.Open(str(tmp_path / "gappy.tif"))
    assert ds.GetGeoTransform() == pytest.approx(gt)
