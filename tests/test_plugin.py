"""The plugin without running the network: loading, provider registration, dependency check and
installer, styling, and the QGIS-provider window reader."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from qgis.core import (QgsApplication, QgsRasterLayer, QgsRectangle, QgsVectorLayer)

from conftest import ROOT
from plugin_fixtures import CLASSES, make_rgb

import fctl_qgis
from fctl_qgis import deps
from fctl_qgis.plugin import FCtLPlugin
from fctl_qgis.provider import PROVIDER_ID, FCtLProvider


@pytest.fixture
def plugin(qgis_iface):
    p = fctl_qgis.classFactory(qgis_iface)
    yield p
    p.unload()


def test_provider_registered_with_segment_algorithm(plugin, qgis_app):
    plugin.initProcessing()
    provider = QgsApplication.processingRegistry().providerById(PROVIDER_ID)
    assert provider is not None
    assert provider.name() == "FCtL segmentation"
    assert not provider.icon().isNull()
    alg = QgsApplication.processingRegistry().algorithmById("fctl:segment")
    assert alg is not None
    names = [p.name() for p in alg.parameterDefinitions()]
    assert names[:3] == ["INPUT", "MODEL", "BANDS"]
    for required in ("EXTENT", "DEVICE", "BATCH_SIZE", "TTA", "EXACT_CONTEXT", "SHARED_CONTEXT",
                     "MIN_AREA", "OUTPUT_RASTER", "OUTPUT_VECTOR"):
        assert required in names
    outputs = {o.name(): o.type() for o in alg.outputDefinitions()}
    assert outputs["OUTPUT_RASTER"] == "outputRaster"
    assert outputs["OUTPUT_VECTOR"] == "outputVector"


def test_registering_twice_does_not_crash(plugin, qgis_iface):
    plugin.initProcessing()
    plugin.initProcessing()
    second = FCtLPlugin(qgis_iface)
    second.initProcessing()           # another instance: reuses the registered provider
    registry = QgsApplication.processingRegistry()
    assert [p.id() for p in registry.providers()].count(PROVIDER_ID) == 1
    assert registry.algorithmById("fctl:segment") is not None
    plugin.unload()
    assert registry.providerById(PROVIDER_ID) is None
    plugin.initProcessing()           # re-enabling after unload registers it again
    assert registry.algorithmById("fctl:segment") is not None


def test_gui_adds_and_removes_action(qgis_iface):
    p = FCtLPlugin(qgis_iface)
    p.initGui()
    assert p.action is not None and p.action.text() == "FCtL segmentation"
    p.show_dock(True)
    assert p.dock is not None and p.dock.windowTitle() == "FCtL segmentation"
    p.unload()
    assert p.dock is None and p.action is None
    assert QgsApplication.processingRegistry().providerById(PROVIDER_ID) is None


# ---------------------------------------------------------------- missing dependencies
@pytest.fixture
def torch_missing(monkeypatch):
    real = deps.find_spec
    monkeypatch.setattr(deps, "find_spec",
                        lambda name: None if name in ("torch", "timm") else real(name))


def test_missing_dependencies_listed(torch_missing):
    status = deps.check()
    assert status.missing == ["torch", "timm"]
    msg = status.message()
    assert "torch==2.14.1" in msg and "timm==1.0.31" in msg and "Install dependencies" in msg


def test_provider_lists_no_algorithm_when_torch_missing(torch_missing, qgis_app):
    provider = FCtLProvider()
    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(provider)
    try:
        assert provider.algorithms() == []
        assert registry.algorithmById("fctl:segment") is None
        assert "missing: torch, timm" in provider.longName()
    finally:
        registry.removeProvider(provider)


def test_dock_shows_missing_dependencies(torch_missing, qgis_iface):
    from fctl_qgis.dock import FCtLDock

    dock = FCtLDock(qgis_iface)
    assert not dock.deps_box.isHidden()
    assert "torch, timm" in dock.deps_label.text()
    assert dock.install_button.isEnabled()
    assert not dock.run_button.isEnabled() and not dock.click_button.isEnabled()
    dock.deleteLater()


def test_dock_hides_dependency_box_when_all_present(qgis_iface):
    from fctl_qgis.dock import FCtLDock

    dock = FCtLDock(qgis_iface)
    assert dock.deps_box.isHidden()
    assert dock.device_combo.count() >= 2 and dock.device_combo.itemData(1) == "cpu"
    dock.deleteLater()


def test_dependency_folder_on_sys_path(tmp_path, monkeypatch):
    from fctl_qgis import bootstrap

    monkeypatch.setenv("FCTL_DEPS_DIR", str(tmp_path / "deps"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert bootstrap.deps_dir() == tmp_path / "deps"
    bootstrap.setup_paths()
    assert str(tmp_path / "deps") not in sys.path          # absent folder: nothing added
    (tmp_path / "deps").mkdir()
    sys.path.append(str(tmp_path / "deps"))                # as an older version left it
    bootstrap.setup_paths()
    # first: what the installer put there runs, not an older copy in QGIS's Python
    # (tests/test_deps_install.py shows the shadowing this prevents)
    assert sys.path[0] == str(tmp_path / "deps")
    assert sys.path.count(str(tmp_path / "deps")) == 1


def test_pins_match_requirements_txt():
    pins = {line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")}
    assert set(deps.REQUIRED.values()) <= pins
    assert "numpy<2" in (ROOT / "constraints.txt").read_text()


# the installer (pip run by QGIS's Python): tests/test_deps_install.py


# ---------------------------------------------------------------- styling
def _legend():
    from fctl_qgis.styling import LegendClass

    return [LegendClass(i, n, c) for i, (n, c) in enumerate(CLASSES)]


def test_raster_styled_paletted_with_class_names(tmp_path, qgis_app):
    from conftest import write_geotiff
    from fctl_qgis.styling import style_layer

    path = write_geotiff(tmp_path / "cls.tif", np.arange(49, dtype=np.uint8).reshape(7, 7) % 7)
    layer = QgsRasterLayer(str(path), "classes", "gdal")
    assert layer.isValid()
    style_layer(layer, _legend())
    r = layer.renderer()
    assert r.type() == "paletted"
    got = {c.value: (c.label, c.color.getRgb()[:3]) for c in r.classes()}
    assert got[4] == ("water", (0, 0, 255)) and got[0] == ("urban", (0, 255, 255))
    assert len(got) == 7


def test_polygons_categorized_by_class_id(qgis_app):
    from fctl_qgis.styling import style_layer

    layer = QgsVectorLayer("Polygon?crs=EPSG:32631&field=class_id:integer&field=class_name:string",
                           "p", "memory")
    style_layer(layer, _legend())
    r = layer.renderer()
    assert r.type() == "categorizedSymbol" and r.classAttribute() == "class_id"
    cats = {c.value(): (c.label(), c.symbol().color().getRgb()[:3]) for c in r.categories()}
    assert cats[3] == ("forest", (0, 255, 0)) and len(cats) == 7


# ---------------------------------------------------------------- provider reader
def test_provider_reader_matches_gdal(tmp_path, qgis_app):
    from osgeo import gdal

    from fctl_qgis.qgis_reader import ProviderReader, reader_for_layer

    path = make_rgb(tmp_path / "rgb.tif", size=96, nodata=0)
    layer = QgsRasterLayer(str(path), "rgb", "gdal")
    src, reader = reader_for_layer(layer)
    assert src == str(path) and reader is None          # GDAL opens it: the engine reads it
    r = ProviderReader(layer)
    assert (r.width, r.height, r.band_count) == (96, 96, 3)
    assert r.geotransform == pytest.approx((500000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5))
    assert "UTM zone 31N" in r.crs_wkt and r.nodata == [0.0, 0.0, 0.0]
    ds = gdal.Open(str(path))
    want = ds.ReadAsArray(10, 20, 30, 40)[[2, 0]].astype(np.float32)
    got = r.read(10, 20, 30, 40, [3, 1])
    assert got.dtype == np.float32 and got.shape == (2, 40, 30)
    np.testing.assert_array_equal(got, want)
    small = r.read(0, 0, 96, 96, [1], out_w=48, out_h=48)
    assert small.shape == (1, 48, 48)
    # contexts through a provider are area means, the values of GDAL's average read (which
    # also leaves nodata pixels out of the mean, whereas the provider path keeps them)
    clean = ds.GetRasterBand(1).ReadAsArray().reshape(48, 2, 48, 2).min(axis=(1, 3)) != 0
    gdal_avg = ds.GetRasterBand(1).ReadAsArray(0, 0, 96, 96, buf_xsize=48, buf_ysize=48,
                                               resample_alg=gdal.GRIORA_Average)
    np.testing.assert_array_equal(small[0][clean], gdal_avg[clean])
    from model_core.resample import area_average
    odd = r.read(0, 0, 96, 96, [2], out_w=17, out_h=23)
    np.testing.assert_array_equal(odd, area_average(ds.ReadAsArray()[1:2], 23, 17))
    mask = r.valid(0, 0, 96, 96, [1, 2, 3])
    np.testing.assert_array_equal(mask, (ds.ReadAsArray() != 0).all(axis=0))
    with pytest.raises(ValueError, match="band"):
        r.read(0, 0, 4, 4, [4])
    # a chosen pixel size over a sub-extent resamples the grid
    r2 = ProviderReader(layer, QgsRectangle(500000, 4999976, 500024, 5000000), pixel_size=1.0)
    assert (r2.width, r2.height) == (24, 24)
    np.testing.assert_allclose(r2.read(0, 0, 24, 24, [1])[0], ds.ReadAsArray(0, 0, 48, 48)[0, ::2, ::2],
                               atol=0)


def test_provider_reader_reads_xyz_tiles(tmp_path, qgis_app):
    """An XYZ layer (a source GDAL cannot open by path) read through its data provider."""
    from qgis.PyQt.QtGui import QColor, QImage

    from fctl_qgis.qgis_reader import reader_for_layer

    z = 1
    for x in range(2):
        for y in range(2):
            img = QImage(256, 256, QImage.Format_ARGB32)
            img.fill(QColor(40 + 100 * x, 60 + 100 * y, 200))
            d = tmp_path / "tiles" / str(z) / str(x)
            d.mkdir(parents=True, exist_ok=True)
            assert img.save(str(d / f"{y}.png"))
    url = (tmp_path / "tiles").as_uri() + "/{z}/{x}/{y}.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmax=1&zmin=1", "tiles", "wms")
    assert layer.isValid(), layer.error().summary()
    extent = QgsRectangle(-15000000, -15000000, -5000000, 15000000)   # western half, both rows
    src, reader = reader_for_layer(layer, extent)
    assert src == "tiles" and reader is not None and reader.band_count == 4
    assert reader.width == int(round(10000000 / min(layer.dataProvider().nativeResolutions())))
    rgb = reader.read(0, 0, reader.width, reader.height, [1, 2, 3], out_w=8, out_h=8)
    top, bottom = rgb[:, 1, 4], rgb[:, 6, 4]
    np.testing.assert_allclose(top, [40, 60, 200], atol=2)
    np.testing.assert_allclose(bottom, [40, 160, 200], atol=2)
    assert reader.valid(0, 0, 8, 8, [1, 2, 3]).all()


def test_plugin_hides_triton_only_when_it_imports_torch(tmp_path):
    """triton's LLVM segfaults the QGIS desktop (see engine.guard_torch_import): loading the
    plugin or a torch-free engine module leaves triton alone; the plugin hides it right before
    it first brings torch in, and torch/timm import and run without it."""
    import os
    import subprocess

    code = ("import fctl_qgis, sys; from fctl_qgis import engine\n"
            "assert 'triton' not in sys.modules and 'torch' not in sys.modules\n"
            "engine.engine_import('inference.option_table', 'segment_options')\n"
            "assert 'triton' not in sys.modules and 'torch' not in sys.modules\n"
            "engine.engine_import('checkpoint', 'read_card')\n"
            "assert 'torch' in sys.modules and sys.modules['triton'] is None\n"
            "import timm, torch\n"
            "m = timm.create_model('mobilenetv3_small_050', pretrained=False, features_only=True)\n"
            "print(len(m(torch.rand(1, 3, 64, 64))))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "5"


def test_an_imported_triton_is_never_hidden(monkeypatch):
    from fctl_qgis import bootstrap

    sentinel = object()
    monkeypatch.setitem(sys.modules, "triton", sentinel)
    assert bootstrap.hide_triton() is False
    bootstrap.unhide_triton()
    assert sys.modules["triton"] is sentinel
