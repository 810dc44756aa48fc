"""``make demo`` = ``python tools/demo.py``: segment the bundled sample raster through QGIS.

It runs the plugin's Processing algorithm exactly as a user's script would:
``qgis_process.bin run fctl:segment --INPUT=... --OUTPUT_RASTER=... --OUTPUT_VECTOR=...`` with the
plugin enabled in a throwaway QGIS profile, then reads the outputs back with GDAL, prints where
they are and the area per class, and saves a preview PNG (image | classes).

A development tool of the repository: it knows the plugin (its name, the QGIS profile layout,
qgis_process); the engine (``model_core``) knows neither.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:      # run as `python tools/demo.py`: the engine is in the root
    sys.path.insert(0, str(ROOT))

from model_core.checkpoint import DEFAULT_MODEL, read_card  # noqa: E402

log = logging.getLogger(__name__)

SAMPLE = ROOT / "resources" / "sample" / "rotterdam_spacenet6_rgb.tif"
OUT_DIR = ROOT / "demo_output"
QGIS_PROCESS = "/usr/bin/qgis_process.bin"   # Debian's qgis_process wrapper breaks 3.22 runs
PLUGIN = "fctl_qgis"
ALGORITHM = "fctl:segment"


@dataclass
class DemoResult:
    raster: Path
    vector: Path
    preview: Path
    seconds: float
    areas: dict[str, float] = field(default_factory=dict)      # class name -> m^2 (or px^2)
    shares: dict[str, float] = field(default_factory=dict)     # class name -> fraction
    polygons: int = 0


def qgis_environment(profile_root: Path) -> dict[str, str]:
    """Environment for a headless ``qgis_process`` that loads the plugin from this repository.

    The plugin is enabled in a throwaway profile under ``profile_root`` (XDG_DATA_HOME), and
    QGIS's Python sees the repository and this interpreter's site-packages (torch, timm).
    """
    ini = profile_root / "QGIS" / "QGIS3" / "profiles" / "default" / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    ini.write_text(f"[PythonPlugins]\n{PLUGIN}=true\n")
    env = dict(os.environ)
    for var in ("QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH"):  # would bypass the profile
        env.pop(var, None)
    paths = [str(ROOT), sysconfig.get_paths()["purelib"]]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env.update({"QT_QPA_PLATFORM": "offscreen", "QGIS_PLUGINPATH": str(ROOT),
                "XDG_DATA_HOME": str(profile_root), "PYTHONPATH": os.pathsep.join(paths),
                "HF_HUB_OFFLINE": "1"})
    return env


def segment_command(raster: Path, out_raster: Path, out_vector: Path, model: Path | None = None,
                    qgis_process: str = QGIS_PROCESS) -> list[str]:
    cmd = [qgis_process, "--json", "run", ALGORITHM, f"--INPUT={raster}",
           f"--OUTPUT_RASTER={out_raster}", f"--OUTPUT_VECTOR={out_vector}"]
    if model is not None:
        cmd.append(f"--MODEL={model}")
    return cmd


def class_areas(raster: Path, names: dict[int, str]) -> tuple[dict[str, float], dict[str, float]]:
    """Area (map units^2, pixels when the raster has no georeferencing) and share per class."""
    from osgeo import gdal

    ds = gdal.Open(str(raster))
    band = ds.GetRasterBand(1)
    arr = band.ReadAsArray()
    nodata = band.GetNoDataValue()
    gt = ds.GetGeoTransform()
    pixel = abs(gt[1] * gt[5] - gt[2] * gt[4]) or 1.0
    valid = arr != nodata if nodata is not None else np.ones(arr.shape, bool)
    ids, counts = np.unique(arr[valid], return_counts=True)
    total = counts.sum() or 1
    areas = {names.get(int(i), f"class {i}"): float(c * pixel) for i, c in zip(ids, counts)}
    shares = {names.get(int(i), f"class {i}"): float(c / total) for i, c in zip(ids, counts)}
    return areas, shares


def count_features(vector: Path) -> int:
    from osgeo import ogr

    ds = ogr.Open(str(vector))
    if ds is None:
        raise RuntimeError(f"the polygon output {vector} cannot be opened")
    return sum(ds.GetLayer(i).GetFeatureCount() for i in range(ds.GetLayerCount()))


def save_preview(image: Path, classes: Path, colors: dict[int, tuple[int, int, int]],
                 names: dict[int, str], out: Path) -> Path:
    """PNG with the image (first three bands, stretched) beside the coloured classes."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    with warnings.catch_warnings():
        # Debian's mpl_toolkits (pulled in by QGIS) shadows pip's: only the 3D axes are lost.
        warnings.simplefilter("ignore", UserWarning)
        import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from osgeo import gdal

    ds = gdal.Open(str(image))
    rgb = np.stack([ds.GetRasterBand(b).ReadAsArray().astype(np.float32)
                    for b in range(1, min(3, ds.RasterCount) + 1)])
    if rgb.shape[0] < 3:
        rgb = np.repeat(rgb[:1], 3, axis=0)
    lo, hi = np.percentile(rgb, 1), np.percentile(rgb, 99)
    rgb = np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1).transpose(1, 2, 0)
    cds = gdal.Open(str(classes))   # keep the dataset alive while its band is read
    cls = cds.GetRasterBand(1).ReadAsArray()
    cds = ds = None
    lut = np.zeros((256, 3), np.uint8)
    for i, c in colors.items():
        lut[i] = c
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.8))
    axes[0].imshow(rgb)
    axes[0].set_title("image")
    axes[1].imshow(lut[cls])
    axes[1].set_title("classes")
    for ax in axes:
        ax.set_axis_off()
    present = [int(i) for i in np.unique(cls) if int(i) in colors]
    handles = [Patch(facecolor=np.array(colors[i]) / 255, edgecolor="k", label=names.get(i, str(i)))
               for i in present]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    tmp = out.with_name(out.stem + ".part.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out


def run_demo(sample: Path = SAMPLE, out_dir: Path = OUT_DIR, model: Path | None = None,
             qgis_process: str = QGIS_PROCESS, timeout: float = 900) -> DemoResult:
    """Segment ``sample`` with ``fctl:segment`` in headless QGIS and summarise the outputs."""
    sample, out_dir = Path(sample), Path(out_dir)
    if not sample.is_file():
        raise FileNotFoundError(f"sample raster {sample} is missing")
    if not Path(qgis_process).is_file():
        raise FileNotFoundError(f"{qgis_process} is missing: install QGIS with `make setup`")
    card = read_card(model if model else DEFAULT_MODEL)
    names = {c.id: c.name for c in card.classes}
    colors = {c.id: c.color for c in card.classes}
    out_dir.mkdir(parents=True, exist_ok=True)
    raster, vector = out_dir / "classes.tif", out_dir / "classes.gpkg"
    for f in (raster, vector):
        f.unlink(missing_ok=True)   # qgis_process does not overwrite a GeoPackage cleanly
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="fctl-demo-profile-") as profile:
        env = qgis_environment(Path(profile))
        cmd = segment_command(sample, raster, vector, model, qgis_process)
        log.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.time() - t0
    if proc.returncode != 0 or not raster.is_file():
        tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-2000:]).strip()
        raise RuntimeError(f"qgis_process {ALGORITHM} failed (exit {proc.returncode}):\n{tail}")
    areas, shares = class_areas(raster, names)
    preview = save_preview(sample, raster, colors, names, out_dir / "preview.png")
    return DemoResult(raster, vector, preview, seconds, areas, shares,
                      count_features(vector) if vector.is_file() else 0)


def report(r: DemoResult) -> str:
    lines = [f"classified raster: {r.raster}", f"class polygons:    {r.vector} "
             f"({r.polygons} polygons)", f"preview:           {r.preview}",
             f"qgis_process run:  {r.seconds:.1f} s", "", f"{'class':<14}{'area (m2)':>14}"
             f"{'area (ha)':>11}{'share':>8}"]
    for name, area in sorted(r.areas.items(), key=lambda kv: -kv[1]):
        lines.append(f"{name:<14}{area:>14,.0f}{area / 1e4:>11.2f}{100 * r.shares[name]:>7.1f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/demo.py", description=__doc__)
    p.add_argument("--input", type=Path, default=SAMPLE, help="raster (default: bundled sample)")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    p.add_argument("--model", type=Path, help="checkpoint (default: bundled model)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        r = run_demo(args.input, args.out, args.model)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"raster": str(r.raster), "vector": str(r.vector),
                          "preview": str(r.preview), "seconds": r.seconds, "areas_m2": r.areas,
                          "polygons": r.polygons}, indent=2))
    else:
        print(report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
