"""``segment``: a raster of any size in, a classified GeoTIFF (and optional polygons) out.

The run: check the inputs and outputs (nothing is created before they pass), load the model,
plan the patch grid (:mod:`.plan`), read the global context once and encode it, then read
batches of patches with their contexts (:mod:`.patches`, ahead in reading threads:
:mod:`.batches`), run them (:mod:`.predict`), merge the logits in bounded memory (:mod:`.merge`)
and stream the labels into a temporary GeoTIFF (:mod:`.writers`); sieve and polygonise
(:mod:`.polygons`) and only then move the files into place. Any error or cancellation removes
what the run wrote.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import CheckpointError, ModelCard, load_checkpoint
from ..geometry import Window
from .batches import run_patches
from .context_map import SharedContextLayout
from .mask import PolygonMask, open_mask
from .merge import StreamingMerger
from .options import Cancelled, CancelFn, ProgressFn, SegmentOptions, SegmentResult
from .patches import PatchSource
from .plan import make_plan, resolve_window, window_geotransform
from ..ground import ground_of
from .polygons import pixel_area, polygonize, sieve
from .predict import Predictor, resolve_device, resolve_precision
from .protocol import check_model
from .reader import GdalReader, WindowReader
from .stretch import InputScaling, resolve_scaling
from .resolution import Resolution, close_vrt, open_vrt, plan_resolution, to_input_grid
from .writers import NODATA, ClassRasterWriter, add_overviews, part_path, remove_quietly

log = logging.getLogger(__name__)

# Shares of the progress bar: patches, then sieve + polygons when asked for.
_PATCH_END_WITH_VECTOR = 0.85


def segment(options: SegmentOptions, *, progress: ProgressFn | None = None,
            is_cancelled: CancelFn | None = None, reader: WindowReader | None = None,
            model: torch.nn.Module | None = None, card: ModelCard | None = None
            ) -> SegmentResult:
    """Segment ``options.input`` (or ``reader``) into ``options.output`` (+ ``options.vector``).

    Args:
        options: what to do (see :class:`SegmentOptions`).
        progress: called with (fraction, message) as the run advances.
        is_cancelled: polled at least once per batch; True stops the run with :class:`Cancelled`
            and leaves no output.
        reader: read pixels through this instead of opening ``options.input`` with GDAL (the
            caller keeps ownership and closes it).
        model, card: an already loaded model following
            :class:`~model_core.inference.protocol.SegmentationModel` and its card, instead of
            loading ``options.model``; both or neither.

    Raises:
        FileNotFoundError, ValueError, PermissionError, CheckpointError (a ValueError): bad
            input, with the problem and the remedy in the message. :class:`Cancelled`.
    """
    t0 = time.perf_counter()
    report = _monotonic(progress)
    cancelled = is_cancelled or (lambda: False)
    own_reader = reader is None
    if own_reader:
        reader = GdalReader(options.input)
    res = None
    try:
        _check_outputs(options, reader)
        device = resolve_device(options.device)
        model, card = _model(options, model, card, device)
        if own_reader:
            res = plan_resolution(options.input, reader.width, reader.height,
                                  reader.geotransform if reader.has_geotransform else None,
                                  reader.crs_wkt, options.pixel_size,
                                  card.gsd)
            log.info("processing resolution: %s", res.reason)
            if res.target_m is not None:
                open_vrt(options.input, res, reader.overviews)
                native_reader, reader = reader, GdalReader(res.vrt, overviews=True)
                native_reader.close()
        window = resolve_window((reader.width, reader.height), reader.geotransform,
                                options.extent, _scaled_window(options.window, res))
        mask = open_mask(options, reader)
        window = mask.clip(window) if mask is not None else window
        _check_min_area(options, reader)
        bands = resolve_bands(options.bands, card.bands, reader.band_count,
                              model.config.in_chans)
        scaling = resolve_scaling(options.scale, card.scale, reader, bands)
        if cancelled():
            raise Cancelled("segmentation cancelled before it started")
        return _run(options, scaling.reader, window, model, card, bands, scaling, device,
                    report, cancelled, t0, res, mask)
    finally:
        if own_reader:
            reader.close()
        if res is not None:
            close_vrt(res)


def _scaled_window(window, res: Resolution | None):
    """A pixel window of the input raster on the processing grid."""
    if window is None or res is None or not res.resampled:
        return window
    f = res.factor
    x, y, w, h = window
    return (int(x / f), int(y / f), max(1, round(w / f)), max(1, round(h / f)))


# --------------------------------------------------------------------------- the run
def _run(options: SegmentOptions, reader: WindowReader, window: tuple[int, int, int, int],
         model: torch.nn.Module, card: ModelCard, bands: list[int],
         scaling: InputScaling, device: torch.device, report: ProgressFn,
         cancelled: CancelFn, t0: float, res: Resolution | None = None,
         mask: PolygonMask | None = None) -> SegmentResult:
    cfg = model.config
    k = int(cfg.num_classes)
    p = int(cfg.patch_size)
    plan = make_plan((reader.width, reader.height), p, window, k, options.memory_mb,
                     options.min_overlap)
    if mask is not None:
        mask.restrict(plan)
    streams = {name: cfg.context_spec(name) for name in model.context_streams}
    source = PatchSource(reader, bands, scaling.scale, p, streams)
    amp = resolve_precision(options.precision, device)
    predictor = Predictor(model, device, options.tta, amp=amp)
    wx, wy, ww, wh = window
    has_gt = getattr(reader, "has_geotransform", True)
    gt = window_geotransform(reader.geotransform, wx, wy) if has_gt else None
    log.info("segmenting %d x %d px of %s: %d x %d patches of %d px (%d to run), contexts %s, "
             "device %s, %s%s", ww, wh, options.input, *plan.grid, p, len(plan.patches),
             streams or "none", device, "bf16" if amp else "fp32",
             ", TTA x8" if options.tta else "")
    if options.shared_context:
        _share_contexts(plan, source, predictor)

    writer = ClassRasterWriter(options.output, ww, wh, gt, reader.crs_wkt, card.classes)
    vector_tmp = part_path(options.vector, ".part.gpkg") if options.vector else None
    sieve_tmp = part_path(options.output, ".sieve.part") if options.vector else None
    try:
        for name in source.global_streams:
            report(0.0, f"encoding the global context ({name})")
            predictor.set_global(name, source.global_image())
        merger = StreamingMerger(plan, k, lambda x, y, lab: writer.write(x - wx, y - wy, lab),
                                 NODATA, mask.window_pixels if mask is not None else None)
        end = _PATCH_END_WITH_VECTOR if options.vector else 0.98
        run_patches(plan, source, predictor, merger, options, report, cancelled, end)
        if not merger.done:
            raise RuntimeError("internal error: some output cells never received all their "
                               "patches")
        log.info("merge: at most %.1f MiB of logits held at once (all logits would be %.0f MiB)",
                 merger.peak_cells_bytes / 2 ** 20, 4.0 * k * ww * wh / 2 ** 20)
        writer.close()
        class_pixels = merger.class_pixels
        raster_tmp = writer.tmp
        ground = ground_of(gt, reader.crs_wkt, ww, wh)
        threshold = _sieve_pixels(options, gt, ground)
        if options.sieve_raster and threshold > 1:
            report(end, f"sieving regions under {threshold} px")
            sieve(raster_tmp, None, threshold, is_cancelled=cancelled)
            class_pixels = _histogram(raster_tmp, k)
        if options.vector:
            poly_src = raster_tmp
            if threshold > 1 and not options.sieve_raster:
                report(end, f"sieving regions under {threshold} px")
                sieve(raster_tmp, sieve_tmp, threshold,
                      progress=lambda f: report(end + 0.05 * f, "sieving"),
                      is_cancelled=cancelled)
                poly_src = sieve_tmp
            remove_quietly(vector_tmp)
            n = polygonize(poly_src, vector_tmp, options.layer_name, card.classes,
                           progress=lambda f: report(end + 0.05 + 0.09 * f, "polygonising"),
                           is_cancelled=cancelled)
            log.info("%d polygons", n)
        out_size, out_gt = (ww, wh), gt
        if res is not None and res.resampled and options.output_grid == "input":
            report(0.99, "writing the labels on the input's grid")
            bounds = (gt[0], gt[3] + wh * gt[5], gt[0] + ww * gt[1], gt[3])
            w, h, out_gt = to_input_grid(raster_tmp, res.input_gt, res.input_size, bounds)
            out_size = (w, h)
            class_pixels = _histogram(raster_tmp, k)
        _stamp(raster_tmp, res, ground, scaling.metadata())
        report(0.99, "building overviews")
        add_overviews(raster_tmp, is_cancelled=cancelled)
        if cancelled():
            raise Cancelled("segmentation cancelled")
        if options.vector:
            os.replace(vector_tmp, options.vector)
        try:
            output = writer.commit()
        except BaseException:
            if options.vector:   # the pair is published together or not at all
                remove_quietly(options.vector)
            raise
    except BaseException:
        writer.abort()
        remove_quietly(*(p for p in (vector_tmp, sieve_tmp) if p is not None))
        raise
    finally:
        if sieve_tmp is not None:
            remove_quietly(sieve_tmp)
    report(1.0, "done")

    out_ground = ground_of(out_gt, reader.crs_wkt, *out_size)
    area = out_ground.pixel_area_m2 if out_ground.known else 1.0
    by_id = card.class_by_id()
    ids = sorted(set(by_id) | {i for i in range(k) if class_pixels[i]})
    return SegmentResult(
        output=str(output), vector=str(options.vector) if options.vector else None,
        width=out_size[0], height=out_size[1], grid=plan.grid, patches=len(plan.patches),
        device=str(device), area_unit="m2" if out_ground.known else "pixels",
        processing=res.reason if res is not None else "native resolution (reader given)",
        seconds=time.perf_counter() - t0,
        class_pixels={i: int(class_pixels[i]) for i in ids},
        class_areas={i: float(class_pixels[i]) * area for i in ids},
        class_names={i: by_id[i].name if i in by_id else f"class {i}" for i in ids},
        class_colors={i: tuple(by_id[i].color) if i in by_id else (128, 128, 128) for i in ids},
        window=tuple(window), nodata=NODATA)


def _share_contexts(plan, source: PatchSource, predictor: Predictor) -> None:
    """Shared-context mode: every non-global context stream reads map tiles, not windows."""
    names = [n for n, spec in source.streams.items() if str(spec).lower() != "global"]
    if not names:
        log.info("shared contexts: the model has no medium or local-window context to share")
        return
    stride = getattr(predictor.model, "context_stride", None)
    if not stride:
        raise ValueError(f"{type(predictor.model).__name__} does not declare context_stride, "
                         "so its context features cannot be shared: run without the shared "
                         "context option")
    cells = predictor.context_cells()
    p = source.p
    w, h = plan.raster_size
    # the whole raster's first and last patches fix the tiles, whatever the processed extent
    corners = [Window(0, 0, p, p), Window(max(w - p, 0), max(h - p, 0), p, p)]
    for name in names:
        windows = [source.context_window(patch.window, name) for patch in plan.patches]
        grid = [source.context_window(c, name) for c in corners]
        layout = SharedContextLayout(windows, p, int(stride), cells, source.read_context,
                                     grid_windows=grid)
        source.shared[name] = layout
        predictor.share_context(name, layout)
        log.info("shared %s context: %d x %d feature cells in %d x %d tiles", name,
                 *layout.map_cells, *layout.grid)


# --------------------------------------------------------------------------- checks
def _monotonic(progress: ProgressFn | None) -> ProgressFn:
    """Progress clamped to [0, 1] and never going back (GDAL's steps may overshoot)."""
    last = [0.0]

    def report(fraction: float, message: str) -> None:
        last[0] = max(last[0], min(max(float(fraction), 0.0), 1.0))
        if progress is not None:
            progress(last[0], message)
    return report


def _model(options: SegmentOptions, model: torch.nn.Module | None, card: ModelCard | None,
           device: torch.device) -> tuple[torch.nn.Module, ModelCard]:
    if (model is None) != (card is None):
        raise ValueError("pass both model and card (an already loaded model), or neither")
    if model is None:
        try:
            model, card = load_checkpoint(options.model, device)
        except CheckpointError:
            raise
        except Exception as exc:  # safetensors/torch errors on a damaged file
            raise CheckpointError(f"cannot load the model {options.model or 'default'}: {exc}; "
                                  "the file is damaged or not an FCtL checkpoint") from exc
    check_model(model)
    if model.config.num_classes != card.config.num_classes:
        raise CheckpointError(f"the model has {model.config.num_classes} classes but its card "
                              f"{card.config.num_classes}")
    if model.config.num_classes > NODATA:
        raise ValueError(f"{model.config.num_classes} classes do not fit the uint8 output "
                         f"(ids 0..{NODATA - 1}; {NODATA} is nodata)")
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    return model, card


def resolve_bands(requested: list[int] | None, card_bands: list[int], band_count: int,
                  in_chans: int) -> list[int]:
    """1-based raster bands fed to the network: ``requested`` (--bands) or the model's; a
    single-band raster is replicated to the model's channels (grey -> RGB)."""
    if requested:
        bands = [int(b) for b in requested]
        bad = [b for b in bands if not 1 <= b <= band_count]
        if bad:
            raise ValueError(f"band(s) {bad} do not exist: the raster has {band_count} band(s)")
        if len(bands) == 1 and in_chans > 1:
            log.info("band %d replicated to the model's %d input channels", bands[0], in_chans)
            return bands * in_chans
        if len(bands) != in_chans:
            raise ValueError(f"{len(bands)} band(s) {bands} given but the model takes "
                             f"{in_chans} channels: give {in_chans} bands (or one to replicate)")
        return bands
    bands = [int(b) for b in card_bands]
    if all(1 <= b <= band_count for b in bands):
        return bands
    if band_count == 1:
        log.info("single-band raster: band 1 replicated to the model's %d channels", in_chans)
        return [1] * in_chans
    raise ValueError(f"the raster has {band_count} band(s) but the model reads bands {bands}: "
                     f"choose {in_chans} of its bands with --bands (e.g. --bands "
                     f"{' '.join(str(i) for i in range(1, min(in_chans, band_count) + 1))})")


def _check_outputs(options: SegmentOptions, reader: WindowReader) -> None:
    inputs = {os.path.realpath(p) for p in (options.input, getattr(reader, "path", None))
              if p and os.path.exists(p)}
    out = os.path.realpath(options.output)
    if out in inputs:
        raise ValueError(f"the output {options.output} is the input raster: choose another "
                         "output path (the input is never modified)")
    _check_folder(options.output, "output")
    if options.vector:
        vec = os.path.realpath(options.vector)
        if vec in inputs or vec == out:
            raise ValueError(f"the polygon output {options.vector} is the input or the raster "
                             "output: choose another path")
        if Path(options.vector).suffix.lower() != ".gpkg":
            raise ValueError(f"polygons are written as a GeoPackage: give a .gpkg path, not "
                             f"{options.vector}")
        _check_folder(options.vector, "polygon output")
    if options.min_area_unit not in ("m2", "pixels", "map"):
        raise ValueError(f"min_area_unit must be 'm2', 'pixels' or 'map', got "
                         f"{options.min_area_unit!r}")
    if options.min_area < 0:
        raise ValueError(f"min_area must be >= 0, got {options.min_area}")


def _check_folder(path: str, what: str) -> None:
    if Path(path).is_dir():
        raise ValueError(f"the {what} {path} is an existing folder: give the path of a "
                         "file (in that folder, for instance)")
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise FileNotFoundError(f"the {what} folder {folder} does not exist: create it or "
                                "choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"the {what} folder {folder} is not writable: choose another "
                              "path")


def _sieve_pixels(options: SegmentOptions, gt, ground) -> int:
    """The minimum area in pixels of the processing grid."""
    if options.min_area <= 0:
        return 0
    if options.min_area_unit == "m2":   # ground known: checked by _check_min_area
        return int(np.ceil(options.min_area / ground.pixel_area_m2))
    if options.min_area_unit == "map":
        return int(np.ceil(options.min_area / pixel_area(gt)))
    return int(np.ceil(options.min_area))


def _check_min_area(options: SegmentOptions, reader: WindowReader) -> None:
    """A minimum area in m^2 needs the ground: refused before the run, not after it."""
    if options.min_area <= 0 or options.min_area_unit != "m2":
        return
    gt = reader.geotransform if getattr(reader, "has_geotransform", True) else None
    if not ground_of(gt, reader.crs_wkt, reader.width, reader.height).known:
        raise ValueError(f"a minimum area in square metres needs a georeferenced raster with a "
                         f"CRS, which {options.input} is not: give the minimum area in pixels "
                         "(--min-area-unit pixels)")


def _stamp(path: Path, res: Resolution | None, ground, extra: dict[str, str]) -> None:
    """Record the processing resolution and the input scaling in the output's metadata."""
    from osgeo import gdal

    ds = gdal.Open(str(path), gdal.GA_Update)
    if ds is None:
        return
    md = {"FCTL_PROCESSING": res.reason if res is not None else "native resolution"}
    if ground.pixel_size_m:
        md["FCTL_PROCESSING_PIXEL_SIZE_M"] = f"{ground.pixel_size_m:.6g}"
    if res is not None and res.raster_m:
        md["FCTL_INPUT_PIXEL_SIZE_M"] = f"{res.raster_m:.6g}"
    ds.SetMetadata({**(ds.GetMetadata() or {}), **md, **extra})
    ds = None


def _histogram(path: Path, k: int) -> np.ndarray:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    hist = ds.GetRasterBand(1).GetHistogram(-0.5, 255.5, 256, 0, 0)
    return np.asarray(hist[:k], np.int64)
