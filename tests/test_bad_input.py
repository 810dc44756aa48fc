"""Bad input (issue 17): a truncated raster, an output that is a folder, a failed commit and an
incomplete model card each end with one clear message and leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, write_geotiff
from osgeo import gdal

from model_core.cli import main
from model_core.inference import SegmentOptions, segment
from model_core.inference import writers
from model_core.inference.reader import RasterReadError
from model_core.inference.testing import modulo_model

SAMPLE = ROOT / "resources" / "sample" / "rotterdam_spacenet6_rgb.tif"


def _truncated(tmp_path: Path, array: np.ndarray, name: str = "cut.tif") -> Path:
    """A tiled, DEFLATE-compressed GeoTIFF cut in the middle: the header and the first tiles
    are intact (GDAL opens it), later tiles are missing."""
    full = tmp_path / "full.tif"
    ds = gdal.GetDriverByName("GTiff").Create(
        str(full), array.shape[2], array.shape[1], array.shape[0],
        gdal.GDT_UInt16 if array.dtype == np.uint16 else gdal.GDT_Byte,
        options=["TILED=YES", "BLOCKXSIZE=128", "BLOCKYSIZE=128", "COMPRESS=DEFLATE"])
    ds.WriteArray(array)
    ds = None
    data = full.read_bytes()
    full.unlink()
    cut = tmp_path / name
    cut.write_bytes(data[:len(data) // 2])
    assert gdal.Open(str(cut)) is not None
    return cut


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_truncated_raster_fails_with_one_line_and_no_output(tmp_path, dtype):
    rgb = gdal.Open(str(SAMPLE)).ReadAsArray().astype(dtype)
    cut = _truncated(tmp_path, rgb * (15 if dtype == np.uint16 else 1))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "model_core", "segment", str(cut),
                           str(out / "classes.tif"), "--vector", str(out / "classes.gpkg"),
                           "--threads", "1"], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=600)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert str(cut) in errors[0] and "truncated or corrupt" in errors[0]
    assert "ERROR 1" not in proc.stderr       # GDAL's own messages are folded into ours
    assert _listing(out) == []
    assert _listing(tmp_path) == ["cut.tif", "out"]     # nothing next to the input either


def test_read_failure_in_the_middle_of_a_run_removes_partial_outputs(tmp_path):
    # a model without contexts reads patch by patch: the failure comes after outputs exist
    img = (np.arange(3 * 512 * 512) % 251).astype(np.uint8).reshape(3, 512, 512)
    cut = _truncated(tmp_path, img)
    model, card = modulo_model(7, patch_size=64, lcf_contexts=(), ale="off")
    steps: list[str] = []
    with pytest.raises(RasterReadError, match=r"cut\.tif.*truncated or corrupt") as info:
        segment(SegmentOptions(str(cut), str(tmp_path / "o.tif"), device="cpu", min_overlap=8,
                               vector=str(tmp_path / "o.gpkg"), read_workers=2),
                model=model, card=card, progress=lambda f, m: steps.append(m))
    assert "pixels x " in str(info.value)      # names the block
    assert any(m.startswith("patch ") for m in steps), "it failed mid-run, after some patches"
    assert _listing(tmp_path) == ["cut.tif"]


def test_output_that_is_a_folder_is_refused_before_the_run(tmp_path):
    src = write_geotiff(tmp_path / "in.tif", np.zeros((3, 40, 40), np.uint8))
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "polys.gpkg").mkdir()
    model, card = modulo_model(7, patch_size=32)
    calls = []
    with pytest.raises(ValueError, match="is an existing folder"):
        segment(SegmentOptions(str(src), str(tmp_path / "folder.tif"), device="cpu"),
                model=model, card=card, progress=lambda f, m: calls.append(m))
    with pytest.raises(ValueError, match="polygon output .* is an existing folder"):
        segment(SegmentOptions(str(src), str(tmp_path / "o.tif"), device="cpu",
                               vector=str(tmp_path / "polys.gpkg")), model=model, card=card)
    assert calls == []          # refused before any progress
    assert _listing(tmp_path) == ["folder.tif", "in.tif", "polys.gpkg"]
    assert _listing(tmp_path / "folder.tif") == []
    # the command line: one line, non-zero
    rc = main(["segment", str(src), str(tmp_path / "folder.tif")])
    assert rc != 0


@pytest.mark.parametrize("vector", [False, True])
def test_failed_commit_leaves_no_aux_xml(tmp_path, monkeypatch, vector):
    src = write_geotiff(tmp_path / "in.tif", np.zeros((3, 40, 40), np.uint8))
    out = tmp_path / "o.tif"
    real = os.replace

    def failing_replace(a, b):
        if Path(b) == out:
            raise OSError("simulated: the disk is full")
        return real(a, b)

    monkeypatch.setattr(writers.os, "replace", failing_replace)
    model, card = modulo_model(7, patch_size=32)
    with pytest.raises(OSError, match="simulated"):
        segment(SegmentOptions(str(src), str(out), device="cpu", min_overlap=8,
                               vector=str(tmp_path / "o.gpkg") if vector else None),
                model=model, card=card)
    assert _listing(tmp_path) == ["in.tif"]


def test_failed_aux_move_removes_the_published_raster(tmp_path, monkeypatch):
    src = write_geotiff(tmp_path / "in.tif", np.zeros((3, 40, 40), np.uint8))
    out = tmp_path / "o.tif"
    real = os.replace

    def failing_replace(a, b):
        if str(b).endswith(".aux.xml"):
            raise OSError("simulated: cannot move the side file")
        return real(a, b)

    monkeypatch.setattr(writers.os, "replace", failing_replace)
    model, card = modulo_model(7, patch_size=32)
    with pytest.raises(OSError, match="simulated"):
        segment(SegmentOptions(str(src), str(out), device="cpu", min_overlap=8),
                model=model, card=card)
    assert _listing(tmp_path) == ["in.tif"]


def test_import_pth_with_an_incomplete_card_names_the_missing_fields(tmp_path, capsys):
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"name": "x", "classes": [{"id": 0, "name": "a"}]}))
    rc = main(["import-pth", str(tmp_path / "m.pth"), "--out", str(tmp_path / "m.safetensors"),
               "--card", str(card)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "lacks the field(s) config, classes[0].color" in err
    assert "Traceback" not in err
    card.write_text("{not json")
    rc = main(["import-pth", str(tmp_path / "m.pth"), "--out", str(tmp_path / "m.safetensors"),
               "--card", str(card)])
    assert rc != 0 and "not valid JSON" in capsys.readouterr().err
    card.write_text(json.dumps({"config": {"num_classes": 2, "bad_field_type": 1},
                                "classes": [{"id": 5, "name": "a", "color": [1, 2, 3]}]}))
    rc = main(["import-pth", str(tmp_path / "m.pth"), "--out", str(tmp_path / "m.safetensors"),
               "--card", str(card)])
    assert rc != 0 and "do not fit" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


def test_dock_output_names_are_unique_within_a_second(tmp_path):
    pytest.importorskip("qgis.gui")
    from fctl_qgis.dock import _unique_stem

    first = _unique_stem(tmp_path, "ortho_fctl_20240101_120000")
    second = _unique_stem(tmp_path, "ortho_fctl_20240101_120000")   # same second, no file yet
    assert first != second
    (tmp_path / "other_fctl_1.tif.part").write_bytes(b"")            # being written elsewhere
    assert _unique_stem(tmp_path, "other_fctl_1") == "other_fctl_1_2"
