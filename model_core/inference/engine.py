"""``segment``: a raster of any size in, a classified GeoTIFF (and optional polygons) out.

The run: check the inputs and outputs (nothing is created before they pass), load the model,
plan the patch grid (:mod:`.plan`), read the global context once and encode it, then read
batches of patches with their contexts (:mod:`.patches`, ahead in reading threads:
:mod:`.batches`), run them (:mod:`.predict`), merge the logits in bounded memory (:mod:`.merge`)
and stream the labels into a temporary GeoTIFF (:mod:`.writers`); sieve and polygonise
(:mod:`.polygons`) and only then move the files into place. Any error or cancellation removes
what the run wrote.

A folder of tiles or a list file is read as one mosaic (:mod:`.mosaic`). With
``options.dask`` the labels are computed block by block on a Dask cluster
(:mod:`model_core.distributed`), which runs each block through this same code
(:class:`Block`) and finishes the assembled raster with :func:`finish`.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..checkpoint import CheckpointError, ModelCard, load_checkpoint
from ..geometry import Window
from ..ground import ground_of
from .batches import run_patches
from .checks import check_min_area, check_outputs, resolve_bands, sieve_pixels
from .context_map import SharedContextLayout
from .drawn import drawn_raster
from .heap import return_freed_memory
from .mask import PolygonMask, open_mask
from .merge import StreamingMerger
from .mosaic import mosaic_input
from .options import Cancelled, CancelFn, ProgressFn, SegmentOptions, SegmentResult
from .patches import PatchSource
from .plan import make_plan, resolve_window, window_geotransform
from .polygons import polygonize, sieve
from .predict import Predictor, resolve_device, resolve_precision
from .protocol import check_model
from .reader import GdalReader, WindowReader
from .resolution import Resolution, close_vrt, open_vrt, plan_resolution, to_input_grid
from .stretch import InputScaling, resolve_scaling
from .writers import NODATA, ClassRasterWriter, add_overviews, part_path, remove_quietly

__all__ = ["segment", "prepared", "finish", "class_histogram", "Block", "Setup", "resolve_bands"]

log = logging.getLogger(__name__)

# Shares of the progress bar: patches, then sieve + polygons when asked for.
_PATCH_END_WITH_VECTOR = 0.85


@dataclass
class Block:
    """One block of a distributed run: ``window`` (xoff, yoff, xsize, ysize) on the processing
    grid, and the global context images the client read once (by stream name). A block run
    writes only its labels: no polygons, sieving, overviews or return to the input grid."""

    window: tuple[int, int, int, int]
    global_images: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Setup:
    """What a run works with once its inputs passed the checks."""

    options: SegmentOptions
    reader: WindowReader            # the processing grid's reader (scaled view of the input)
    window: tuple[int, int, int, int]
    mask: PolygonMask | None
    bands: list[int]
    scaling: InputScaling
    res: Resolution | None
    model: torch.nn.Module
    card: ModelCard
    device: torch.device
    source: str = ""                # the input as the user named it (a folder, a scan...)

    @property
    def window_gt(self):
        """Geotransform of the processed window (None without georeferencing)."""
        if not getattr(self.reader, "has_geotransform", True):
            return None
        return window_geotransform(self.reader.geotransform, *self.window[:2])


def segment(options: SegmentOptions, *, progress: ProgressFn | None = None,
            is_cancelled: CancelFn | None = None, reader: WindowReader | None = None,
            model: torch.nn.Module | None = None, card: ModelCard | None = None,
            block: Block | None = None) -> SegmentResult:
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
        block: run one block of a distributed run (used by :mod:`model_core.distributed`).

    Raises:
        FileNotFoundError, ValueError, PermissionError, CheckpointError (a ValueError): bad
            input, with the problem and the remedy in the message. :class:`Cancelled`.
    """
    if options.dask and block is None:
        if reader is not None or model is not None:
            raise ValueError("a Dask run reads the raster file on the workers: give a raster "
                             "path (not a data provider's reader) and no loaded model, or run "
                             "without a Dask scheduler")
        from ..distributed.client import segment_distributed

        return segment_distributed(options, progress=progress, is_cancelled=is_cancelled)
    t0 = time.perf_counter()
    report = monotonic_progress(progress)
    cancelled = is_cancelled or (lambda: False)
    with prepared(options, reader, model, card, block) as setup:
        if cancelled():
            raise Cancelled("segmentation cancelled before it started")
        return _run(setup, report, cancelled, t0, block)


@contextmanager
def prepared(options: SegmentOptions, reader: WindowReader | None = None,
             model: torch.nn.Module | None = None, card: ModelCard | None = None,
             block: Block | None = None, folder: str | None = None) -> Iterator[Setup]:
    """Open, check and resolve everything a run needs (see :func:`segment`); closes the
    readers and temporary files it opened on exit. ``folder``: where the VRT of a raster placed
    by GCPs goes when other processes read it too (else a temporary folder)."""
    own_reader = reader is None
    res = None
    source = options.input
    with mosaic_input(options) as options, ExitStack() as temporary:
        if own_reader:
            reader = GdalReader(options.input)
        try:
            check_outputs(options, reader)
            device = resolve_device(options.device)
            model, card = _model(options, model, card, device)
            if own_reader:   # after the output checks, which must see the original input
                # the raster as QGIS draws it: colours of a palette, GCPs warped onto a map grid
                colours = list(card.bands) == [1, 2, 3] and not options.bands
                view = temporary.enter_context(drawn_raster(options.input, folder, colours))
                if view != options.input:
                    options = replace(options, input=view)
                    reader.close()
                    reader = GdalReader(options.input)
            if own_reader:
                res = plan_resolution(options.input, reader.width, reader.height,
                                      reader.geotransform if reader.has_geotransform else None,
                                      reader.crs_wkt, options.pixel_size, card.gsd)
                log.info("processing resolution: %s", res.reason)
                if res.target_m is not None:
                    open_vrt(options.input, res, reader.overviews)
                    native_reader, reader = reader, GdalReader(res.vrt, overviews=True)
                    native_reader.close()
            mask = open_mask(options, reader)
            if block is not None:
                window = tuple(block.window)
            else:
                window = resolve_window((reader.width, reader.height), reader.geotransform,
                                        options.extent, _scaled_window(options.window, res))
                window = mask.clip(window) if mask is not None else window
            check_min_area(options, reader)
            bands = resolve_bands(options.bands, card.bands, reader.band_count,
                                  model.config.in_chans, reader.color_interpretations)
            scaling = resolve_scaling(options.scale, card.scale, reader, bands)
            yield Setup(options, scaling.reader, window, mask, bands, scaling, res, model,
                        card, device, source)
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
def _run(s: Setup, report: ProgressFn, cancelled: CancelFn, t0: float,
         block: Block | None) -> SegmentResult:
    options, reader, model = s.options, s.reader, s.model
    cfg = model.config
    k = int(cfg.num_classes)
    p = int(cfg.patch_size)
    plan = make_plan((reader.width, reader.height), p, s.window, k, options.memory_mb,
                     options.min_overlap)
    if s.mask is not None:
        s.mask.restrict(plan)
    streams = {name: cfg.context_spec(name) for name in model.context_streams}
    source = PatchSource(reader, s.bands, s.scaling.scale, p, streams)
    amp = resolve_precision(options.precision, s.device)
    predictor = Predictor(model, s.device, options.tta, amp=amp)
    wx, wy, ww, wh = s.window
    log.info("segmenting %d x %d px of %s: %d x %d patches of %d px (%d to run), contexts %s, "
             "device %s, %s%s", ww, wh, s.source or options.input, *plan.grid, p, len(plan.patches),
             streams or "none", s.device, "bf16" if amp else "fp32",
             ", TTA x8" if options.tta else "")
    if options.shared_context:
        _share_contexts(plan, source, predictor)

    writer = ClassRasterWriter(options.output, ww, wh, s.window_gt, reader.crs_wkt,
                               s.card.classes)
    end = _PATCH_END_WITH_VECTOR if options.vector else 0.98
    try:
        for name in source.global_streams:
            report(0.0, f"encoding the global context ({name})")
            image = block.global_images[name] if block is not None else source.global_image()
            predictor.set_global(name, image)
        merger = StreamingMerger(plan, k, lambda x, y, lab: writer.write(x - wx, y - wy, lab),
                                 NODATA, s.mask.window_pixels if s.mask is not None else None)
        run_patches(plan, source, predictor, merger, options, report, cancelled,
                    0.999 if block is not None else end)
        if not merger.done:
            raise RuntimeError("internal error: some output cells never received all their "
                               "patches")
        log.info("merge: at most %.1f MiB of logits held at once (all logits would be %.0f MiB)",
                 merger.peak_cells_bytes / 2 ** 20, 4.0 * k * ww * wh / 2 ** 20)
        writer.close()
        if block is not None:   # a block's labels only: the client finishes the whole
            if cancelled():
                raise Cancelled("segmentation cancelled")
            writer.commit()
    except BaseException:
        writer.abort()
        raise
    if block is not None:
        return _result(s, str(options.output), None, (ww, wh), s.window_gt,
                       merger.class_pixels, plan.grid, len(plan.patches), t0)
    return finish(s, writer, merger.class_pixels, plan.grid, len(plan.patches), report,
                  cancelled, t0, end)


def finish(s: Setup, writer: ClassRasterWriter, class_pixels: np.ndarray,
           grid: tuple[int, int], patches: int, report: ProgressFn, cancelled: CancelFn,
           t0: float, end: float) -> SegmentResult:
    """The labels of the whole window are in ``writer``'s (closed) temporary GeoTIFF: sieve,
    polygonise, return to the input grid, stamp, add overviews and move the outputs into place.
    Any error or cancellation removes the temporary files, ``writer``'s included."""
    options, card = s.options, s.card
    k = int(s.model.config.num_classes)
    ww, wh = s.window[2:]
    gt, crs_wkt = s.window_gt, s.reader.crs_wkt
    vector_tmp = part_path(options.vector, ".part.gpkg") if options.vector else None
    sieve_tmp = part_path(options.output, ".sieve.part") if options.vector else None
    return_freed_memory()   # the network is done: its freed activations leave before the polygons
    try:
        raster_tmp = writer.tmp
        ground = ground_of(gt, crs_wkt, ww, wh)
        threshold = sieve_pixels(options, gt, ground)
        if options.sieve_raster and threshold > 1:
            report(end, f"sieving regions under {threshold} px")
            sieve(raster_tmp, None, threshold, is_cancelled=cancelled)
            class_pixels = class_histogram(raster_tmp, k)
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
        res = s.res
        if res is not None and res.resampled and options.output_grid == "input":
            report(0.99, "writing the labels on the input's grid")
            with GdalReader(options.input, overviews=False) as native:
                valid = None
                if native.masked(s.bands):
                    def valid(x: int, y: int, w: int, h: int) -> np.ndarray:
                        return native.valid(x, y, w, h, s.bands)
                w, h, out_gt = to_input_grid(raster_tmp, res.input_gt, res.input_size, gt,
                                             (ww, wh), valid)
            out_size = (w, h)
            class_pixels = class_histogram(raster_tmp, k)
        _stamp(raster_tmp, res, ground, s.scaling.metadata())
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
    return _result(s, str(output), str(options.vector) if options.vector else None, out_size,
                   out_gt, class_pixels, grid, patches, t0)


def _result(s: Setup, output: str, vector: str | None, out_size: tuple[int, int], out_gt,
            class_pixels: np.ndarray, grid: tuple[int, int], patches: int,
            t0: float) -> SegmentResult:
    k = int(s.model.config.num_classes)
    out_ground = ground_of(out_gt, s.reader.crs_wkt, *out_size)
    area = out_ground.pixel_area_m2 if out_ground.known else 1.0
    by_id = s.card.class_by_id()
    ids = sorted(set(by_id) | {i for i in range(k) if class_pixels[i]})
    res = s.res
    return SegmentResult(
        output=output, vector=vector, width=out_size[0], height=out_size[1], grid=grid,
        patches=patches, device=str(s.device),
        area_unit="m2" if out_ground.known else "pixels",
        processing=res.reason if res is not None else "native resolution (reader given)",
        seconds=time.perf_counter() - t0,
        class_pixels={i: int(class_pixels[i]) for i in ids},
        class_areas={i: float(class_pixels[i]) * area for i in ids},
        class_names={i: by_id[i].name if i in by_id else f"class {i}" for i in ids},
        class_colors={i: tuple(by_id[i].color) if i in by_id else (128, 128, 128) for i in ids},
        window=tuple(s.window), nodata=NODATA)


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


# --------------------------------------------------------------------------- helpers
def monotonic_progress(progress: ProgressFn | None) -> ProgressFn:
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


def class_histogram(path: Path, k: int) -> np.ndarray:
    from osgeo import gdal

    ds = gdal.Open(str(path))
    hist = ds.GetRasterBand(1).GetHistogram(-0.5, 255.5, 256, 0, 0)
    return np.asarray(hist[:k], np.int64)
