"""Polygon masks and extents in QGIS (headless): ``fctl:segment``'s MASK parameter (a polygon
layer in another CRS, all or selected features only), the dock's "Features of a polygon layer"
mode, the extent honoured with a provider reader (a 'virtualraster' layer, which GDAL cannot open
by path), and the dock's zoom levels for web layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature,
                       QgsGeometry, QgsProcessingException,
                       QgsProcessingFeatureSourceDefinition, QgsProcessingFeedback,
                       QgsProcessingUtils, QgsProject, QgsRasterLayer, QgsRectangle,
                       QgsVectorLayer)

from plugin_fixtures import provider, tiny_model  # noqa: F401  (fixtures)
from plugin_fixtures import make_rgb, open_dock, wait_for_task
from conftest import write_geotiff

pytestmark = pytest.mark.slow

X0, Y0 = 500000.0, 5000000.0           # make_rgb's origin, 0.5 m pixels, EPSG:32631


def _run(params: dict, feedback: QgsProcessingFeedback | None = None) -> dict:
    import processing

    return processing.run("fctl:segment", params, feedback=feedback or QgsProcessingFeedback())


def _polygons_4326(rects: list[tuple[float, float, float, float]]) -> QgsVectorLayer:
    """A memory polygon layer in EPSG:4326 holding ``rects`` given in EPSG:32631 metres."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326", "fields", "memory")
    xform = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:32631"),
                                   QgsCoordinateReferenceSystem("EPSG:4326"),
                                   QgsProject.instance())
    feats = []
    for r in rects:
        geom = QgsGeometry.fromRect(QgsRectangle(*r))
        geom.transform(xform)
        f = QgsFeature()
        f.setGeometry(geom)
        feats.append(f)
    assert layer.dataProvider().addFeatures(feats)[0]
    QgsProject.instance().addMapLayer(layer)
    return layer


def _ids_west_to_east(layer: QgsVectorLayer) -> list[int]:
    feats = sorted(layer.getFeatures(), key=lambda f: f.geometry().boundingBox().xMinimum())
    return [f.id() for f in feats]


def _masks_left() -> list[Path]:
    return list(Path(QgsProcessingUtils.tempFolder()).glob("*/fctl_mask.gpkg"))


# two 20 m squares 160 m apart on a 200 m x 200 m raster (400 px)
NEAR = (X0 + 10, Y0 - 30, X0 + 30, Y0 - 10)
FAR = (X0 + 170, Y0 - 190, X0 + 190, Y0 - 170)


def test_mask_parameter_all_and_selected_features(tmp_path, tiny_model, provider):
    raster = make_rgb(tmp_path / "scene.tif", size=400)
    fields = _polygons_4326([NEAR, FAR])
    before = _masks_left()
    try:
        full = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1,
                     "OUTPUT_RASTER": str(tmp_path / "full.tif")})
        both = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1,
                     "MASK": fields.id(), "OUTPUT_RASTER": str(tmp_path / "both.tif"),
                     "OUTPUT_VECTOR": str(tmp_path / "both.gpkg")})
        assert full["PATCHES"] == 25 and both["PATCHES"] < full["PATCHES"]
        ds = gdal.Open(both["OUTPUT_RASTER"])
        assert (ds.RasterXSize, ds.RasterYSize) == (360, 360)      # the two squares' box
        lab = ds.ReadAsArray()
        inside = np.zeros_like(lab, bool)
        inside[0:40, 0:40] = True                                  # NEAR at (20, 20) px
        inside[320:360, 320:360] = True                            # FAR
        assert (lab[~inside] == 255).all() and (lab[inside] != 255).all()
        vec = QgsVectorLayer(both["OUTPUT_VECTOR"], "v", "ogr")
        area = sum(f.geometry().area() for f in vec.getFeatures())
        assert area == pytest.approx(2 * 400.0)                    # two 20 m x 20 m squares

        # selected features only: the far square alone
        fields.selectByIds([_ids_west_to_east(fields)[1]])
        sel = _run({"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1,
                    "MASK": QgsProcessingFeatureSourceDefinition(fields.id(), True),
                    "OUTPUT_RASTER": str(tmp_path / "sel.tif")})
        ds = gdal.Open(sel["OUTPUT_RASTER"])
        assert (ds.RasterXSize, ds.RasterYSize) == (40, 40)
        assert ds.GetGeoTransform()[0] == pytest.approx(X0 + 170)
        assert (ds.ReadAsArray() != 255).all() and sel["PATCHES"] < both["PATCHES"]

        fields.removeSelection()
        errors = []

        class Feedback(QgsProcessingFeedback):
            def reportError(self, error, fatalError=False):  # noqa: N802,N803
                errors.append(error)

        with pytest.raises(QgsProcessingException):
            _run({"INPUT": str(raster), "MODEL": str(tiny_model), "DEVICE": 1,
                  "MASK": QgsProcessingFeatureSourceDefinition(fields.id(), True),
                  "OUTPUT_RASTER": str(tmp_path / "none.tif")}, Feedback())
        assert any("no polygon" in e and "select" in e for e in errors), errors
        assert not (tmp_path / "none.tif").exists()
    finally:
        QgsProject.instance().removeMapLayer(fields.id())
    assert _masks_left() == before            # the temporary masks are gone


def _virtual_raster(path: Path, size: int) -> QgsRasterLayer:
    """Band 1 of ``path`` through QGIS's 'virtualraster' provider (no GDAL path)."""
    uri = (f"?crs=EPSG:32631&extent={X0},{Y0 - size / 2},{X0 + size / 2},{Y0}"
           f"&width={size}&height={size}&formula=%22rgb@1%22&rgb:uri={path}&rgb:provider=gdal")
    layer = QgsRasterLayer(uri, "virtual", "virtualraster")
    assert layer.isValid() and layer.providerType() == "virtualraster"
    return layer


def test_extent_is_honoured_with_a_provider_reader(tmp_path, tiny_model, provider):
    from fctl_qgis.qgis_reader import reader_for_layer

    raster = make_rgb(tmp_path / "rgb.tif", size=300)
    layer = _virtual_raster(raster, 300)
    extent = QgsRectangle(X0 + 20, Y0 - 100, X0 + 80, Y0 - 30)          # 120 x 140 px
    src, reader = reader_for_layer(layer, extent)
    try:   # a sized provider: its whole grid, the engine processes the extent on it
        assert src == "virtual" and reader is not None
        assert (reader.width, reader.height) == (300, 300)
    finally:
        reader.close()
    QgsProject.instance().addMapLayer(layer)
    try:
        res = _run({"INPUT": layer.id(), "MODEL": str(tiny_model), "DEVICE": 1,
                    "EXTENT": "500020,500080,4999900,4999970 [EPSG:32631]",
                    "OUTPUT_RASTER": str(tmp_path / "provider.tif")})
        whole = _run({"INPUT": layer.id(), "MODEL": str(tiny_model), "DEVICE": 1,
                      "OUTPUT_RASTER": str(tmp_path / "whole.tif")})
    finally:
        QgsProject.instance().removeMapLayer(layer.id())
    ds = gdal.Open(res["OUTPUT_RASTER"])
    assert (ds.RasterXSize, ds.RasterYSize) == (120, 140)
    assert ds.GetGeoTransform()[0] == pytest.approx(X0 + 20)
    assert ds.GetGeoTransform()[3] == pytest.approx(Y0 - 30)
    # the extent's labels are the whole layer's there (contexts from the whole layer)
    np.testing.assert_array_equal(ds.ReadAsArray(),
                                  gdal.Open(whole["OUTPUT_RASTER"]).ReadAsArray()[60:200, 40:160])
    assert res["PATCHES"] < whole["PATCHES"] == 16
    # the same patches as for the same band read by GDAL from a file
    band1 = write_geotiff(tmp_path / "band1.tif", gdal.Open(str(raster)).ReadAsArray()[0])
    ref = _run({"INPUT": str(band1), "MODEL": str(tiny_model), "DEVICE": 1,
                "EXTENT": "500020,500080,4999900,4999970 [EPSG:32631]",
                "OUTPUT_RASTER": str(tmp_path / "gdal.tif")})
    assert res["PATCHES"] == ref["PATCHES"]


# ------------------------------------------------------------------ dock
@pytest.fixture
def dock(qgis_iface, tiny_model, tmp_path):
    with open_dock(qgis_iface, tiny_model, tmp_path / "results") as d:
        yield d


def test_dock_polygon_mode_masks_the_features(dock, tmp_path):
    layer = QgsRasterLayer(str(make_rgb(tmp_path / "scene.tif", size=400)), "scene", "gdal")
    QgsProject.instance().addMapLayer(layer)
    dock.layer_combo.setLayer(layer)
    dock.vector_check.setChecked(False)
    fields = _polygons_4326([NEAR, FAR])
    dock.area_combo.setCurrentIndex(2)
    dock.polygon_combo.setLayer(fields)
    before = _masks_left()
    assert dock.run()
    assert dock.task.options.mask and dock.task.options.extent is not None
    outcome = wait_for_task(dock)
    assert outcome.ok, outcome.error
    lab = gdal.Open(outcome.result.output).ReadAsArray()
    assert lab.shape == (360, 360) and (lab[100:260, 100:260] == 255).all()
    assert (lab[0:40, 0:40] != 255).all() and outcome.result.patches < 25
    fields.selectByIds([_ids_west_to_east(fields)[0]])       # selected only (the default)
    assert dock.run()
    outcome = wait_for_task(dock)
    assert outcome.ok, outcome.error
    assert gdal.Open(outcome.result.output).ReadAsArray().shape == (40, 40)
    assert _masks_left() == before


def test_dock_offers_zoom_levels_for_web_layers(dock, tmp_path):
    from qgis.PyQt.QtGui import QColor, QImage

    d = tmp_path / "tiles" / "0" / "0"
    d.mkdir(parents=True)
    img = QImage(256, 256, QImage.Format_ARGB32)
    img.fill(QColor(90, 120, 60))
    assert img.save(str(d / "0.png"))
    url = (tmp_path / "tiles").as_uri() + "/{z}/{x}/{y}.png"
    xyz = QgsRasterLayer(f"type=xyz&url={url}&zmin=0&zmax=19", "tiles", "wms")
    ortho = QgsRasterLayer(str(make_rgb(tmp_path / "o.tif", size=64)), "o", "gdal")
    QgsProject.instance().addMapLayers([xyz, ortho])
    dock.layer_combo.setLayer(ortho)
    assert dock.zoom_combo.isHidden()                      # a file has its own pixel size
    dock.layer_combo.setLayer(xyz)
    assert not dock.zoom_combo.isHidden() and dock.zoom_combo.count() == 21
    assert dock.zoom_combo.itemText(1).startswith("zoom 19 (0.299 m")
    z8 = next(i for i in range(dock.zoom_combo.count())
              if dock.zoom_combo.itemText(i).startswith("zoom 8 "))
    dock.zoom_combo.setCurrentIndex(z8)
    dock.zoom_combo.activated.emit(z8)
    assert dock.run_options["pixel_size"].value() == pytest.approx(611.5, abs=0.1)
