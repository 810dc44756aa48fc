"""``python -m model_core bench``: FCtL against its FCN-8s baseline, same backbone, decoder, grid.

Writes ``bench.json`` and ``bench.md`` with per-patch latency and throughput, a per-module
profile, whole-raster wall time and peak RSS (each raster run in its own process through the
``segment`` command, exactly as users run it) and the FCtL/baseline ratios. The per-patch part
needs no GDAL, so it also runs on GPU machines without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Sequence

import torch

from .config import FCtLConfig
from .registry import DEFAULT_ARCH, create_model

log = logging.getLogger(__name__)


def _device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def build(config: FCtLConfig, device: torch.device) -> torch.nn.Module:
    from .models.fuse import fuse_for_inference

    torch.manual_seed(0)
    # As the engine's Predictor runs it: fused for inference, NHWC, per-image encoder/decoder
    # calls on CPU.
    model = create_model(DEFAULT_ARCH, config).eval()
    fuse_for_inference(model)
    model.per_image_calls = device.type == "cpu"
    return model.to(device=device, memory_format=torch.channels_last)


def patch_inputs(model: torch.nn.Module, batch: int, device: torch.device,
                 shared: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """A batch of patches with the contexts the engine would hand over: the global context's
    features are cached (encoded once per raster), other contexts are images, or with
    ``shared`` cached features too (sampled from the shared map, whose encoding is counted in
    the whole-raster runs). Boxes are per-sample tensors, as the engine passes them."""
    cfg = model.config
    p = cfg.patch_size
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, cfg.in_chans, p, p, generator=g).to(device)
    kwargs: dict[str, Any] = {"boxes": {}, "cached": {}}
    for name in model.context_streams:
        if cfg.context_spec(name) == "global":
            with _autocast(device):
                kwargs["cached"][name] = model.encode_context(
                    torch.rand(1, cfg.in_chans, p, p, generator=g).to(device))
            kwargs["boxes"][name] = torch.tensor([[0.3, 0.3, 0.5, 0.5]] * batch)
            continue
        images = torch.rand(batch, cfg.in_chans, p, p, generator=g).to(device).contiguous(
            memory_format=torch.channels_last)
        kwargs["boxes"][name] = torch.tensor([model.default_box(name)] * batch)
        if shared:
            with torch.inference_mode(), _autocast(device):
                kwargs["cached"][name] = model.encode_context(images)
        else:
            kwargs[name] = images
    return x.contiguous(memory_format=torch.channels_last), kwargs


def time_patches(model: torch.nn.Module, batch: int, device: torch.device, repeats: int,
                 shared: bool = False) -> dict[str, float]:
    """Median seconds per forward of ``batch`` patches, and peak GPU memory on CUDA."""
    x, kw = patch_inputs(model, batch, device, shared)
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), _autocast(device):
        model(x, **kw)  # warm-up (cudnn autotune, allocator)
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            model(x, **kw)
            _sync(device)
            times.append(time.perf_counter() - t)
    out = {"batch": batch, "seconds": statistics.median(times)}
    out["per_patch_s"] = out["seconds"] / batch
    out["patches_per_s"] = batch / out["seconds"]
    if device.type == "cuda":
        out["peak_gpu_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return out


def tensor_memory(model: torch.nn.Module, device: torch.device, shared: bool = False
                  ) -> dict[str, float]:
    """MiB of activations one 508 px patch holds at its peak, fp32 and bf16 autocast, counted
    tensor by tensor (:mod:`model_core.tensor_memory`, so also on a CPU), with the encoder and
    decoder batched as on CUDA; weights and inputs apart."""
    from .tensor_memory import peak_tensor_bytes

    x, kw = patch_inputs(model, 1, device, shared)
    inputs = [x, *kw["cached"].values(), *kw["boxes"].values(),
              *(v for v in kw.values() if isinstance(v, torch.Tensor))]
    weights = [*model.parameters(), *model.buffers()]
    out = {"weights_mb": sum(t.numel() * t.element_size() for t in weights) / 2**20}
    per_image, model.per_image_calls = getattr(model, "per_image_calls", False), False
    try:
        for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            cast = torch.autocast(device.type, dtype=dtype) if dtype is not None \
                else nullcontext()
            with torch.inference_mode(), cast:
                peak = peak_tensor_bytes(lambda: model(x, **kw), exclude=weights + inputs)
            out[f"activations_{label}_mb"] = peak / 2**20
    finally:
        model.per_image_calls = per_image
    return out


def profile_modules(model: torch.nn.Module, device: torch.device, batch: int = 1,
                    shared: bool = False) -> dict[str, float]:
    """Share of one forward's time spent in each top-level module (encoder, lcf, ale, decoder)."""
    x, kw = patch_inputs(model, batch, device, shared)
    spent: dict[str, float] = {}
    starts: dict[str, float] = {}
    hooks = []
    for name, module in model.named_children():
        def pre(_m, _i, name=name):
            _sync(device)
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            _sync(device)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - starts[name]
        hooks += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.inference_mode(), _autocast(device):
            model(x, **kw)
            spent.clear()
            _sync(device)
            t = time.perf_counter()
            model(x, **kw)
            _sync(device)
            total = time.perf_counter() - t
    finally:
        for h in hooks:
            h.remove()
    out = {k: v / total for k, v in spent.items()}
    out["other"] = max(0.0, 1.0 - sum(out.values()))
    out["total_s"] = total
    return out


# ----------------------------------------------------------------------------- whole rasters
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
    from .checkpoint import ClassInfo, ModelCard, save_checkpoint

    torch.manual_seed(0)
    classes = [ClassInfo(i, f"class {i}", (40 * i % 256, 90 * i % 256, 150 * i % 256))
               for i in range(config.num_classes)]
    save_checkpoint(path, create_model(DEFAULT_ARCH, config),
                    ModelCard(config=config, classes=classes, arch=DEFAULT_ARCH))


def run_raster(raster: Path, model_path: Path, out: Path, device: str, batch: int,
               threads: int, extra: Sequence[str] = ()) -> dict[str, float]:
    """Segment one raster in a fresh process; wall time and that process's peak RSS."""
    cmd = [sys.executable, "-m", "model_core", "segment", str(raster), str(out),
           "--model", str(model_path), "--device", device, "--batch-size", str(batch), *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TQDM_DISABLE="1")
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=str(Path(__file__).resolve().parent.parent))
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"segment failed on {raster}:\n{output[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024,
            "s_per_megapixel": wall / (_pixels(raster) / 1e6)}


def time_reads(raster: Path, config: FCtLConfig, workers: int = 1) -> dict[str, float]:
    """Reading alone: every patch's network inputs (patch, per-patch contexts; the global
    context once) with ``workers`` threads, each on its own handle, as the engine reads them.
    Next to a GPU this, not the network, can bound a run."""
    from .inference.batches import reading_threads
    from .inference.patches import PatchSource
    from .inference.plan import make_plan
    from .inference.reader import GdalReader

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
def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = dict(backbone=args.backbone, patch_size=args.patch_size, num_classes=7,
                medium_context=args.medium_context, large_context=args.large_context)
    configs = {"fctl": FCtLConfig(**base), "baseline": FCtLConfig.baseline(**base)}
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "config": {k: v for k, v in base.items()},
        "patch": {}, "profile": {}, "memory": {}, "raster": {}}
    # per patch: FCtL with per-patch contexts, FCtL with the shared medium context, baseline
    for key, name, shared in (("fctl", "fctl", False), ("fctl_shared", "fctl", True),
                              ("baseline", "baseline", False)):
        model = build(configs[name], device)
        report["patch"][key] = {f"batch{b}": time_patches(model, b, device, args.repeats, shared)
                                for b in sorted({1, args.batch_size})}
        report["profile"][key] = profile_modules(model, device, shared=shared)
        report["memory"][key] = tensor_memory(model, device, shared=shared)
        del model
    if args.rasters:
        try:
            import osgeo  # noqa: F401
        except ImportError:
            log.warning("GDAL is not installed: whole-raster benchmarks skipped")
            args.rasters = []
    with tempfile.TemporaryDirectory(prefix="fctl-bench-") as tmp:
        tmp = Path(tmp)
        for size in args.rasters:
            raster = tmp / f"synthetic_{size}.tif"
            _synthetic_raster(raster, size)
            # FCtL with per-patch contexts, FCtL with the shared medium context, the baseline
            runs = [("fctl", "fctl", ("--exact-context",)), ("fctl_shared", "fctl", ()),
                    ("baseline", "baseline", ())]
            tries: dict[str, list[dict[str, float]]] = {key: [] for key, _, _ in runs}
            # Repeats are interleaved (A B C A B C) so that a slow spell of the shared machine
            # does not fall on one configuration only; the fastest try of each is kept.
            for _ in range(max(1, args.raster_repeats)):
                for key, name, extra in runs:
                    ckpt = tmp / f"{name}.safetensors"
                    if not ckpt.exists():
                        _write_checkpoint(configs[name], ckpt)
                    log.info("segmenting %d x %d with %s", size, size, key)
                    tries[key].append(run_raster(raster, ckpt, tmp / f"out_{key}_{size}.tif",
                                                 args.device, args.raster_batch_size,
                                                 torch.get_num_threads(), extra))
            row: dict[str, Any] = {}
            for key, results in tries.items():
                row[key] = dict(min(results, key=lambda r: r["wall_s"]), repeats=len(results))
            for key, name in (("fctl", "fctl"), ("baseline", "baseline")):
                row[key].update(time_reads(raster, configs[name]))
            base = row["baseline"]
            row["ratio_wall"] = row["fctl"]["wall_s"] / base["wall_s"]
            row["ratio_rss"] = row["fctl"]["peak_rss_mb"] / base["peak_rss_mb"]
            row["ratio_wall_shared"] = row["fctl_shared"]["wall_s"] / base["wall_s"]
            row["ratio_rss_shared"] = row["fctl_shared"]["peak_rss_mb"] / base["peak_rss_mb"]
            report["raster"][str(size)] = row
    b = f"batch{args.batch_size}"
    per_patch = {k: report["patch"][k][b]["per_patch_s"] for k in report["patch"]}
    report["ratios"] = {"per_patch": per_patch["fctl"] / per_patch["baseline"],
                        "per_patch_shared": per_patch["fctl_shared"] / per_patch["baseline"]}
    for size, row in report["raster"].items():
        report["ratios"][f"raster_{size}"] = row["ratio_wall"]
        report["ratios"][f"raster_{size}_shared"] = row["ratio_wall_shared"]
    return report


def to_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    dev = m["gpu"] or f"CPU, {m['cpu_threads']} threads"
    lines = [f"Machine: {dev}; {m['platform']}; torch {m['torch']}. Backbone "
             f"`{r['config']['backbone']}`, patch {r['config']['patch_size']} px, contexts "
             f"{r['config']['medium_context']} / {r['config']['large_context']}.", "",
             "| measure | FCtL | FCN-8s baseline | FCtL / baseline |", "|---|---|---|---|"]

    def row(label: str, a: float, b: float, fmt: str = "{:.3f}") -> None:
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f}x |")

    for key in r["patch"]["fctl"]:
        bl = r["patch"]["baseline"][key]
        for name, label in (("fctl", ""), ("fctl_shared", ", shared context")):
            if name not in r["patch"]:
                continue
            f = r["patch"][name][key]
            row(f"s per patch ({key}){label}", f["per_patch_s"], bl["per_patch_s"])
            row(f"patches per s ({key}){label}", f["patches_per_s"], bl["patches_per_s"],
                "{:.2f}")
            if "peak_gpu_mb" in f:
                row(f"peak GPU MB ({key}){label}", f["peak_gpu_mb"], bl["peak_gpu_mb"], "{:.0f}")
    for name, label in (("fctl", ""), ("fctl_shared", ", shared context")):
        f, bl = r.get("memory", {}).get(name), r.get("memory", {}).get("baseline")
        if f and bl:
            for dtype in ("fp32", "bf16"):
                row(f"activation MB per patch, batched, {dtype}{label}",
                    f[f"activations_{dtype}_mb"], bl[f"activations_{dtype}_mb"], "{:.0f}")
    if r.get("memory", {}).get("fctl"):
        row("weights MB", r["memory"]["fctl"]["weights_mb"], r["memory"]["baseline"]["weights_mb"],
            "{:.1f}")
    for size, rr in r["raster"].items():
        bl = rr["baseline"]
        for key, label in (("fctl", ""), ("fctl_shared", ", shared context")):
            if key not in rr:
                continue
            f = rr[key]
            row(f"{size} x {size} wall s{label}", f["wall_s"], bl["wall_s"], "{:.1f}")
            row(f"{size} x {size} s per megapixel{label}", f["s_per_megapixel"],
                bl["s_per_megapixel"], "{:.2f}")
            row(f"{size} x {size} peak RSS MB{label}", f["peak_rss_mb"], bl["peak_rss_mb"],
                "{:.0f}")
            if "read_ms_per_patch" in f:
                row(f"{size} x {size} reading ms per patch (one thread){label}",
                    f["read_ms_per_patch"], bl["read_ms_per_patch"], "{:.1f}")
    lines.append("")
    for name, label in (("fctl", "FCtL"), ("fctl_shared", "FCtL, shared context")):
        if name in r["profile"]:
            prof = r["profile"][name]
            shares = ", ".join(f"{k} {v:.0%}" for k, v in prof.items() if k != "total_s")
            lines.append(f"{label} time per patch by module: {shares}.")
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    report = run_bench(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    md = to_markdown(report)
    (out / "bench.md").write_text(md)
    print(md)
    print(f"written {out / 'bench.json'} and {out / 'bench.md'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark FCtL against the FCN-8s baseline")
    p.add_argument("--out", default="bench", help="folder for bench.json and bench.md")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--patch-size", type=int, default=508)
    p.add_argument("--medium-context", default="x3")
    p.add_argument("--large-context", default="global")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--raster-batch-size", type=int, default=0,
                   help="batch size of the whole-raster runs (0 = the CLI's auto)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--raster-repeats", type=int, default=1,
                   help="segment each raster this many times and keep the fastest run")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--rasters", type=lambda s: [int(v) for v in s.split(",") if v],
                   default=[2448, 5000], help="raster sides to segment, e.g. 2448,5000 ('' = none)")
    p.set_defaults(func=_run)
