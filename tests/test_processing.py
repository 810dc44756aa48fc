"""``fctl:segment`` end to end on GeoTIFFs made in the test, with a tiny random FCtL model:
outputs, CRS, styling and class names, extent reprojection, bands and pixel size, a web tile
layer, batch, cancellation and errors (qgis_process: test_processing_qgis_process.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (QgsCoordinateReferenceSystem, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProject,
                       QgsRasterLayer, QgsVectorLayer)

from plugin_fixtures import provider, tiny_model  # noqa: F401  (fixtures)
from plugin_fixtures import CLASSES, make_rgb


pytestmark = pytest.mark.slow


def _run(params: dict, feedback: QgsProcessingFeedback | None = None,
         context: QgsProcessingContext | None = None) -> dict:
    import processing

    return processing.run("fctl:segment", params, feedback=feedback or QgsProcessingFeedback(),
                          context=context)


def test_segment_writes_georeferenced_classes_and_polygons(tmp_path, tiny_model, provider):
    raster = make_rgb(tmp_path / "in.tif", size=200)
    out_r, out_v = tmp_path / "classes.tif", tmp_path / "polys.gpkg"
    log = []

    class Feedback(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802
            log.append(info)
            super().pushInfo(info)

    res = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1, "BATCH_SIZE": 2,
                "OUTPUT_RASTER": str(out_r), "OUTPUT_VECTOR": str(out_v)}, Feedback())
    assert Path(res["OUTPUT_RASTER"]) == out_r and Path(res["OUTPUT_VECTOR"]) == out_v
    assert res["DEVICE"] == "cpu" and res["PATCHES"] == 4          # 200 px, 128 px patches: 2 x 2
    ds = gdal.Open(str(out_r))
    assert (ds.RasterXSize, ds.RasterYSize) == (200, 200)
    assert ds.GetGeoTransform() == pytest.approx((500000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5))
    labels = ds.ReadAsArray()
    assert labels.dtype == np.uint8 and labels.max() < 7
    text = "\n".join(log)
    assert "Device: cpu" in text and "2 x 2 patches" in text and "Time:" in text
    layer = QgsRasterLayer(str(out_r), "c", "gdal")
    assert layer.crs().authid() == "EPSG:32631"
    vec = QgsVectorLayer(str(out_v), "v", "ogr")
    assert vec.isValid() and vec.featureCount() > 0 and vec.crs().authid() == "EPSG:32631"
    assert {"class_id", "class_name"} <= set(vec.fields().names())
    names = {f["class_name"] for f in vec.getFeatures()}
    assert names <= {n for n, _ in CLASSES}
    # MIN_AREA (square map units) merges small polygons into their neighbours
    res = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1, "MIN_AREA": 200.0,
                "OUTPUT_RASTER": str(tmp_path / "c2.tif"),
                "OUTPUT_VECTOR": str(tmp_path / "p2.gpkg")})
    sieved = QgsVectorLayer(res["OUTPUT_VECTOR"], "s", "ogr")
    assert 1 <= sieved.featureCount() < vec.featureCount()


def test_fast_context_and_automatic_batch_size(tmp_path, tiny_model, provider):
    """The default samples the medium context from a shared map, EXACT_CONTEXT encodes every
    patch's own (the paper): same grid and outputs, labels close to each other; BATCH_SIZE 0
    (the default) is automatic; the former SHARED_CONTEXT is accepted and ignored."""
    raster = make_rgb(tmp_path / "in.tif", size=300)
    labels = {}
    for shared in (False, True):
        out = tmp_path / f"c{int(shared)}.tif"
        mode = {"SHARED_CONTEXT": True} if shared else {"EXACT_CONTEXT": True}
        res = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1, **mode,
                    "OUTPUT_RASTER": str(out)})
        assert res["PATCHES"] == 16   # 300 px, 128 px patches, overlap >= 50: 4 x 4
        ds = gdal.Open(str(out))
        labels[shared] = ds.ReadAsArray()
        ds = None
    assert labels[False].shape == labels[True].shape == (300, 300)
    assert (labels[False] == labels[True]).mean() > 0.9


def test_loaded_results_are_styled_with_class_names(tmp_path, tiny_model, provider):
    import processing

    raster = make_rgb(tmp_path / "in.tif", size=150)
    project = QgsProject.instance()
    project.removeAllMapLayers()
    res = processing.runAndLoadResults(
        "fctl:segment", {"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1,
                         "OUTPUT_RASTER": str(tmp_path / "c.tif"),
                         "OUTPUT_VECTOR": str(tmp_path / "p.gpkg")})
    layers = {lyr.name(): lyr for lyr in project.mapLayers().values()}
    assert set(layers) == {"FCtL classes", "FCtL polygons"}, res
    ras = layers["FCtL classes"].renderer()
    assert ras.type() == "paletted"
    assert {c.value: c.label for c in ras.classes()} == {i: n for i, (n, _) in enumerate(CLASSES)}
    assert ras.classes()[4].color.getRgb()[:3] == CLASSES[4][1]
    vec = layers["FCtL polygons"].renderer()
    assert vec.type() == "categorizedSymbol" and vec.classAttribute() == "class_id"
    cats = {c.value(): (c.label(), c.symbol().color().getRgb()[:3]) for c in vec.categories()}
    assert cats[1] == ("agriculture", (255, 255, 0))
    project.removeAllMapLayers()


def test_extent_in_another_crs_is_reprojected(tmp_path, tiny_model, provider):
    raster = make_rgb(tmp_path / "in.tif", size=200)
    # the raster's left half (x 500000-500050, full height), given in WGS 84
    from qgis.core import QgsCoordinateTransform, QgsRectangle

    utm = QgsCoordinateReferenceSystem("EPSG:32631")
    wgs = QgsCoordinateReferenceSystem("EPSG:4326")
    box = QgsCoordinateTransform(utm, wgs, QgsProject.instance()).transformBoundingBox(
        QgsRectangle(500000.2, 4999900.2, 500049.8, 4999999.8))
    extent = f"{box.xMinimum()},{box.xMaximum()},{box.yMinimum()},{box.yMaximum()} [EPSG:4326]"
    res = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "EXTENT": extent,
                "OUTPUT_RASTER": str(tmp_path / "c.tif")})
    ds = gdal.Open(res["OUTPUT_RASTER"])
    gt = ds.GetGeoTransform()
    assert 95 <= ds.RasterXSize <= 106 and 195 <= ds.RasterYSize <= 200
    assert gt[0] == pytest.approx(500000.0, abs=1.0)


def test_bands_and_pixel_size(tmp_path, tiny_model, provider):
    raster = make_rgb(tmp_path / "in.tif", size=160)
    res = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "BANDS": [3, 2, 1],
                "PIXEL_SIZE": 1.0, "OUTPUT_GRID": 1, "OUTPUT_RASTER": str(tmp_path / "c.tif")})
    ds = gdal.Open(res["OUTPUT_RASTER"])
    assert (ds.RasterXSize, ds.RasterYSize) == (80, 80)     # 0.5 m pixels resampled to 1 m
    assert ds.GetGeoTransform()[1] == pytest.approx(1.0)
    assert ds.GetMetadataItem("FCTL_PROCESSING_PIXEL_SIZE_M") == "1"
    res = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "PIXEL_SIZE": 1.0,
                "OUTPUT_RASTER": str(tmp_path / "c_input.tif")})
    ds = gdal.Open(res["OUTPUT_RASTER"])                   # default: on the input's grid
    assert (ds.RasterXSize, ds.RasterYSize) == (160, 160)
    assert ds.GetGeoTransform()[1] == pytest.approx(0.5)
    with pytest.raises(QgsProcessingException, match="band"):
        _run({"INPUT": str(raster), "MODEL": str(tiny_model), "BANDS": [1, 2, 5],
              "OUTPUT_RASTER": str(tmp_path / "d.tif")})
    assert not (tmp_path / "d.tif").exists()


def test_xyz_layer_read_through_its_provider(tmp_path, tiny_model, provider):
    """A web tile layer (GDAL cannot open it by path) segmented over an extent."""
    from qgis.PyQt.QtGui import QColor, QImage

    for x in range(4):
        for y in range(4):
            img = QImage(256, 256, QImage.Format_ARGB32)
            img.fill(QColor(30 + 60 * x, 40 + 60 * y, 120))
            d = tmp_path / "tiles" / "2" / str(x)
            d.mkdir(parents=True, exist_ok=True)
            assert img.save(str(d / f"{y}.png"))
    url = (tmp_path / "tiles").as_uri() + "/{z}/{x}/{y}.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmin=2&zmax=2", "tiles", "wms")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    try:
        res = _run({"INPUT": layer.id(), "MODEL": str(tiny_model),
                    "EXTENT": "-6000000,6000000,-4000000,4000000 [EPSG:3857]",
                    "OUTPUT_RASTER": str(tmp_path / "c.tif")})
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    out = QgsRasterLayer(res["OUTPUT_RASTER"], "o", "gdal")
    assert out.crs().authid() == "EPSG:3857"
    res_m = 40075016.68557849 / 1024                    # zoom 2: 4 tiles of 256 px
    assert out.width() == round(12000000 / res_m) and out.height() == round(8000000 / res_m)
    assert out.extent().xMinimum() == pytest.approx(-6000000, abs=1)


def test_batch_over_several_inputs(tmp_path, tiny_model, provider):
    """What the batch dialog does: one algorithm, one context, a row of parameters per input."""
    context = QgsProcessingContext()
    outputs = []
    for i, epsg in enumerate((32631, 3857, 2154)):
        raster = make_rgb(tmp_path / f"in{i}.tif", size=100 + 10 * i, epsg=epsg, seed=i)
        res = _run({"INPUT": str(raster), "MODEL": str(tiny_model),
                    "OUTPUT_RASTER": str(tmp_path / f"out{i}.tif")}, context=context)
        outputs.append((res["OUTPUT_RASTER"], 100 + 10 * i, epsg))
    for path, size, epsg in outputs:
        layer = QgsRasterLayer(path, "o", "gdal")
        assert layer.width() == size and layer.crs().authid() == f"EPSG:{epsg}"


def test_cancel_leaves_no_output(tmp_path, tiny_model, provider):
    raster = make_rgb(tmp_path / "in.tif", size=300)
    out = tmp_path / "out" / "c.tif"
    out.parent.mkdir()
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda p: feedback.cancel() if p > 0 else None)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        _run({"INPUT": str(raster), "MODEL": str(tiny_model), "BATCH_SIZE": 1,
              "OUTPUT_RASTER": str(out), "OUTPUT_VECTOR": str(tmp_path / "out" / "p.gpkg")},
             feedback)
    assert list(out.parent.iterdir()) == []


def test_bad_model_is_a_clear_error(tmp_path, tiny_model, provider):
    """Checked before the run starts: the message reaches the log (the dialog, qgis_process)."""
    raster = make_rgb(tmp_path / "in.tif", size=64)
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a checkpoint")
    errors = []

    class Feedback(QgsProcessingFeedback):
        def reportError(self, error, fatalError=False):  # noqa: N802,N803
            errors.append(error)

    with pytest.raises(QgsProcessingException):
        _run({"INPUT": str(raster), "MODEL": str(bogus),
              "OUTPUT_RASTER": str(tmp_path / "c.tif")}, Feedback())
    assert any("not a readable safetensors checkpoint" in e for e in errors), errors
    with pytest.raises(QgsProcessingException):
        _run({"INPUT": str(raster), "MODEL": str(tiny_model),
              "OUTPUT_RASTER": str(tmp_path / "c.png")}, Feedback())
    assert any("must be a GeoTIFF" in e for e in errors), errors
    assert not (tmp_path / "c.tif").exists() and not (tmp_path / "c.png").exists()


def test_dask_scheduler_parameter_runs_on_a_local_cluster(tmp_path, tiny_model, provider):
    """DASK_SCHEDULER sends the run to Dask workers block by block: the same raster and
    polygons as in the QGIS process (the workers use 1 thread each, QGIS its own count, so a
    near-tie pixel may flip: bit-for-bit equality at equal threads is tests/test_distributed)."""
    pytest.importorskip("distributed")
    raster = make_rgb(tmp_path / "in.tif", size=300)
    common = {"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1}
    one = _run({**common, "OUTPUT_RASTER": str(tmp_path / "one.tif"),
                "OUTPUT_VECTOR": str(tmp_path / "one.gpkg")})
    dk = _run({**common, "DASK_SCHEDULER": "local:2", "BLOCK_SIZE": 128,
               "OUTPUT_RASTER": str(tmp_path / "dk.tif"),
               "OUTPUT_VECTOR": str(tmp_path / "dk.gpkg")})
    a, b = gdal.Open(str(tmp_path / "one.tif")), gdal.Open(str(tmp_path / "dk.tif"))
    assert (a.ReadAsArray() == b.ReadAsArray()).mean() > 0.999
    assert b.GetGeoTransform() == a.GetGeoTransform()
    assert dk["PATCHES"] == one["PATCHES"]
    assert QgsVectorLayer(str(tmp_path / "dk.gpkg")).featureCount() > 0
    assert not (tmp_path / "dk.tif.fctl-blocks").exists()
    with pytest.raises(QgsProcessingException, match="cannot reach the Dask scheduler"):
        _run({**common, "DASK_SCHEDULER": "tcp://127.0.0.1:9",
              "OUTPUT_RASTER": str(tmp_path / "x.tif")})


def test_raster_placed_by_gcps_lies_where_qgis_draws_it(tmp_path, tiny_model, provider):
    """A scan georeferenced by GCPs only (turned by 36.87 degrees): QGIS draws it through GDAL's
    warper; the class raster and the polygons land on that footprint in its CRS, not in pixel
    coordinates; an extent in the layer's CRS selects part of it."""
    src = gdal.Open(str(make_rgb(tmp_path / "rgb.tif", size=200)))
    scan = gdal.GetDriverByName("GTiff").Create(str(tmp_path / "scan.tif"), 200, 200, 3)
    for i in range(3):
        scan.GetRasterBand(i + 1).WriteArray(src.GetRasterBand(i + 1).ReadAsArray())
    x0, y0 = 600000.0, 5750000.0
    scan.SetGCPs([gdal.GCP(x0 + 0.4 * c + 0.3 * r, y0 + 0.3 * c - 0.4 * r, 0, c, r)
                  for c, r in ((0, 0), (200, 0), (0, 200), (200, 200))], src.GetProjection())
    scan = None
    layer = QgsRasterLayer(str(tmp_path / "scan.tif"), "scan", "gdal")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32631"
    drawn = layer.extent()
    assert drawn.xMinimum() == pytest.approx(x0, abs=1) and drawn.yMaximum() == pytest.approx(
        y0 + 60, abs=1)
    res = _run({"INPUT": layer, "MODEL": str(tiny_model),
                "OUTPUT_RASTER": str(tmp_path / "c.tif"), "OUTPUT_VECTOR": str(tmp_path / "v.gpkg")})
    out = QgsRasterLayer(res["OUTPUT_RASTER"], "c", "gdal")
    assert out.crs().authid() == "EPSG:32631"
    got = out.extent()
    for a, b in ((got.xMinimum(), drawn.xMinimum()), (got.xMaximum(), drawn.xMaximum()),
                 (got.yMinimum(), drawn.yMinimum()), (got.yMaximum(), drawn.yMaximum())):
        assert a == pytest.approx(b, abs=1.0)
    vec = QgsVectorLayer(res["OUTPUT_VECTOR"], "v", "ogr")
    assert vec.crs().authid() == "EPSG:32631" and drawn.contains(vec.extent())
    # the footprint is 100 m x 100 m; the rest of the bounding box is nodata
    assert sum(f["area"] for f in vec.getFeatures()) == pytest.approx(10000, rel=0.02)
    res = _run({"INPUT": layer, "MODEL": str(tiny_model),
                "EXTENT": f"{x0},{x0 + 60},{y0 - 30},{y0 + 30} [EPSG:32631]",
                "OUTPUT_RASTER": str(tmp_path / "part.tif")})
    part = QgsRasterLayer(res["OUTPUT_RASTER"], "p", "gdal").extent()
    assert part.xMinimum() >= x0 - 1 and part.xMaximum() <= x0 + 61
