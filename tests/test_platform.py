"""The platform is real: headless QGIS, Processing on a GDAL GeoTIFF, qgis_process with JSON."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
from osgeo import gdal

from conftest import write_geotiff


def test_qgis_headless_processing_on_gdal_geotiff(qgis_app, qgis_processing, tmp_path):
    from qgis import processing
    from qgis.core import Qgis, QgsRasterLayer

    assert Qgis.QGIS_VERSION_INT >= 32200
    arr = np.arange(64 * 48, dtype=np.uint16).reshape(1, 48, 64)
    src = write_geotiff(tmp_path / "in.tif", arr)
    layer = QgsRasterLayer(str(src), "in")
    assert layer.isValid() and layer.crs().authid() == "EPSG:32631"
    out = tmp_path / "out.tif"
    res = processing.run("native:rasterlayerstatistics", {"INPUT": str(src), "BAND": 1,
                                                          "OUTPUT_HTML_FILE": str(tmp_path / "s.html")})
    assert res["MIN"] == 0 and res["MAX"] == 64 * 48 - 1
    res = processing.run("gdal:translate", {"INPUT": str(src), "OUTPUT": str(out),
                                            "DATA_TYPE": 0})
    ds = gdal.Open(res["OUTPUT"])
    assert (ds.RasterXSize, ds.RasterYSize) == (64, 48)
    del layer


def test_qgis_process_answers_json(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_DATA_HOME=str(tmp_path / "xdg"),
               HOME=str(tmp_path))
    src = write_geotiff(tmp_path / "in.tif", np.full((1, 10, 12), 7, np.uint8))
    proc = subprocess.run(["/usr/bin/qgis_process.bin", "--json", "run",
                           "native:rasterlayerstatistics", f"--INPUT={src}", "--BAND=1",
                           f"--OUTPUT_HTML_FILE={tmp_path / 's.html'}"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert data["results"]["MEAN"] == 7.0
    assert data["results"]["MIN"] == 7.0
