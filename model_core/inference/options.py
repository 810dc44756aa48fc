"""What a segmentation run takes and returns: the contract between the engine, its command line
and the QGIS plugin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

ProgressFn = Callable[[float, str], None]   # (fraction in [0, 1], message)
CancelFn = Callable[[], bool]               # True once the user asked to stop


class Cancelled(RuntimeError):
    """Raised when a run was cancelled; no output is left behind."""


@dataclass
class SegmentOptions:
    """Options of one run of :func:`model_core.inference.segment`.

    Attributes:
        input: raster path (anything GDAL opens), or a label when a reader is passed.
        output: classified GeoTIFF to write (uint8 class ids).
        vector: optional GeoPackage of polygons (fields class_id, class_name, area).
        model: checkpoint path; None = the bundled default model.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        batch_size: patches per forward pass; 0 = auto (8 on CUDA; on CPU 4 for models with
            contexts, whose context fusion gains from batching, or with an encoder that runs
            several patches per call, else 1).
        tta: test-time augmentation (flips x 90-degree rotations, 8 passes).
        extent: (xmin, ymin, xmax, ymax) in the raster's CRS; only that area is processed.
        window: (xoff, yoff, xsize, ysize) in pixels, the alternative to ``extent``.
        mask: polygons (a vector file OGR reads, e.g. a GeoPackage; any CRS) outside which
            nothing is segmented: the extent shrinks to their bounding box, patches without a
            pixel inside them are not run, pixels outside them are nodata (no polygon);
            contexts still come from the whole raster (:mod:`.mask`).
        mask_layer: the mask's layer when its file holds several; None = its only layer.
        bands: 1-based bands fed to the network; None = the model's.
        scale: (lo, hi) raw range mapped to [0, 1]; None = the model's.
        min_area: sieve threshold for the polygons (and the raster when ``sieve_raster``).
        min_area_unit: "m2" (square metres on the ground, any CRS), "pixels" or "map" (square
            map units of the raster's CRS).
        pixel_size: the processing pixel size in metres (:mod:`.resolution`): 0 = auto, the
            model card's ``gsd`` when the raster's differs by more than 15 %; "native" = the
            raster's own; a number = that size.
        output_grid: "input" (labels on the input raster's grid, the default) or "processing"
            (on the grid the model ran on); the same unless the raster was resampled.
        precision: "auto" (bf16 on CUDA GPUs that have it, fp32 on CPUs), "fp32" or "bf16"
            (:func:`.predict.resolve_precision`).
        min_overlap: minimum overlap of neighbouring patches in pixels.
        layer_name: name of the polygon layer in the GeoPackage.
        memory_mb: budget of the streaming merge (logit accumulator and label strips) in MiB;
            rasters too wide for it run in column groups. Never changes the labels. 256 MiB
            keeps rasters up to about 36,000 px wide (7 classes, 256 px patches) in one group;
            wider ones run in groups, so that the merge and the held context tiles, which span a
            group's width, stay bounded (a 100,000 px wide raster held 142 MiB of logits and
            about 100 MiB of context tiles in one group).
        prefetch: read the next batch in a background thread while the current one runs.
        read_workers: threads reading batches ahead in parallel (each with its own handle on the
            raster); 0 = auto: 1 on CPU, where the reads share the cores with the network, and
            up to 4 next to a GPU, where one thread cannot read as fast as the GPU runs.
        shared_context: encode the medium (and any non-global large) context once per raster
            area and sample each patch's features from that map instead of encoding every
            patch's context window (:mod:`.context_map`): about half the network time of FCtL,
            labels slightly different from per-patch contexts. The default (issue 16); False =
            the paper's per-patch contexts (``--exact-context``, ``EXACT_CONTEXT``).
        dask: a Dask scheduler to spread the run over (:mod:`model_core.distributed`):
            "local" or "local:N" (N worker processes on this machine) or "tcp://host:port" (a
            running scheduler); "" = in this process. The labels are the same.
        block_size: side in pixels (processing grid) of the blocks a Dask run sends to the
            workers, rounded to whole patches.
        threads: torch CPU threads; 0 = torch's default. The command line sets them in its own
            process; a Dask run gives them to every worker (0: the worker's share of its
            machine's cores). Labels are identical between runs with the same thread count;
            another count can flip rare near-tie pixels (parallel sums add in another order).
        resume: Dask runs: keep the finished blocks when a run stops, and reuse them when the
            same run is started again.

    ``input`` may also be a folder of tiles or a list file of their paths, read as one mosaic
    (:mod:`.mosaic`).

    The front ends (command line, Processing, dock) are built from :mod:`.option_table`, which
    reads its defaults from here.
    """

    input: str
    output: str
    vector: str | None = None
    model: str | None = None
    device: str = "auto"
    batch_size: int = 0
    tta: bool = False
    extent: tuple[float, float, float, float] | None = None
    window: tuple[int, int, int, int] | None = None
    mask: str | None = None
    mask_layer: str | None = None
    bands: list[int] | None = None
    scale: tuple[float, float] | None = None
    min_area: float = 0.0
    min_area_unit: str = "m2"
    sieve_raster: bool = False
    min_overlap: int = 50
    layer_name: str = "classes"
    memory_mb: float = 256.0
    prefetch: bool = True
    read_workers: int = 0
    shared_context: bool = True
    pixel_size: float | str = 0.0
    output_grid: str = "input"
    precision: str = "auto"
    dask: str = ""
    block_size: int = 4096
    threads: int = 0
    resume: bool = False


@dataclass
class SegmentResult:
    """What a finished run produced and how it went."""

    output: str
    vector: str | None
    width: int
    height: int
    grid: tuple[int, int]            # patches per row, per column
    patches: int
    device: str
    seconds: float
    class_pixels: dict[int, int] = field(default_factory=dict)
    # square metres on the ground in every CRS (area_unit "m2"), pixels without a CRS
    class_areas: dict[int, float] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)
    class_colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    window: tuple[int, int, int, int] = (0, 0, 0, 0)   # processed (xoff, yoff, xsize, ysize)
    nodata: int = 255                                   # output value of nodata input pixels
    area_unit: str = "m2"                               # of class_areas: "m2" or "pixels"
    processing: str = ""                                # the processing resolution, in words
