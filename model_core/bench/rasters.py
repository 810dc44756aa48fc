"""Whole-raster figures: synthetic rasters segmented in their own process through the ``segment``
command, exactly as users run it, and the time to read every patch's inputs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import torch

from ..config import FCtLConfig
from ..registry import DEFAULT_ARCH, create_model


def _synthetic_raster(path: Path, size: int) -> None:
    """A georeferenced RGB GeoTIFF with smooth structure (fields, roads) written in strips."""
    import numpy as np
    from osgeo import gdal, osr

    ds = gdal.GetDriverByName("GTiff").Create(str(path), size, size, 3, gdal.GDT_Byte,
                                              ["TILED=YES", "COMPRESS=DEFLATE"])
    ds.SetGeoTransform((500000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    ds.SetProjection(srs.ExportToWkt())
    xs = np.arange(size, dtype=np.float32)
    for y0 in range(0, size, 512):
        ys = np.arange(y0, min(size, y0 + 512), dtype=np.float32)[:, None]
        for b in range(3):
            a = 127 + 60 * np.sin(xs / (97 + 31 * b)) * np.cos(ys / (131 - 17 * b))
            a += 40 * ((xs.astype(int) // 300 + ys.astype(int) // 300) % 2)
            ds.GetRasterBand(b + 1).WriteArray(np.clip(a, 0, 255).astype(np.uint8), 0, y0)
    ds = None


def _write_checkpoint(config: FCtLConfig, path: Path) -> None:
    from ..checkpoint import ClassInfo, ModelCard, save_checkpoint

    torch.manual_seed(0)
    classes = [ClassInfo(i, f"class {i}", (40 * i % 256, 90 * i % 256, 150 * i % 256))
               for i in range(config.num_classes)]
    save_checkpoint(path, create_model(DEFAULT_ARCH, config),
                    ModelCard(config=config, classes=classes, arch=DEFAULT_ARCH))


def run_raster(raster: Path, model_path: Path, out: Path, device: str, batch: int,
               threads: int, extra: Sequence[str] = ()) -> dict[str, float]:
    """Segment one raster in a fresh process; wall time and that process's peak RSS."""
    from .rss import run_model_core

    args = ["segment", str(raster), str(out), "--model", str(model_path), "--device", device,
            "--batch-size", str(batch), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    t = time.perf_counter()
    code, output, peak = run_model_core(args, env, Path(__file__).resolve().parents[2])
    wall = time.perf_counter() - t
    if code != 0:
        raise RuntimeError(f"segment failed on {raster}:\n{output[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": peak,
            "s_per_megapixel": wall / (_pixels(raster) / 1e6)}


def time_reads(raster: Path, config: FCtLConfig, workers: int = 1) -> dict[str, float]:
    """Reading alone: every patch's network inputs (patch, per-patch contexts; the global
    context once) with ``workers`` threads, each on its own handle, as the engine reads them.
    Next to a GPU this, not the network, can bound a run."""
    from ..inference.batches import reading_threads
    from ..inference.patches import PatchSource
    from ..inference.plan import make_plan
    from ..inference.reader import GdalReader

    with GdalReader(str(raster)) as reader:
        p = config.patch_size
        plan = make_plan((reader.width, reader.height), p, (0, 0, reader.width, reader.height),
                         config.num_classes, 1024.0, 50)
        streams = {name: config.context_spec(name) for name in config.context_streams}
        source = PatchSource(reader, [1, 2, 3], (0.0, 255.0), p, streams)
        batches = [plan.patches[i:i + 8] for i in range(0, len(plan.patches), 8)]
        t = time.perf_counter()
        if source.global_streams:
            source.global_image()
        with reading_threads(source, workers) as (pool, _):
            prepared = [source.prepare(b) for b in batches]
            for _ in pool.map(source.fetch, prepared):
                pass
        seconds = time.perf_counter() - t
    return {"read_s": seconds, "read_ms_per_patch": 1000 * seconds / len(plan.patches),
            "workers": workers}


def _pixels(raster: Path) -> int:
    from osgeo import gdal

    ds = gdal.Open(str(raster))
    return ds.RasterXSize * ds.RasterYSize


# ----------------------------------------------------------------------------- report
