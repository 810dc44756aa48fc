"""The run options of :func:`model_core.inference.segment` as one table.

Each :class:`RunOption` says what one user-facing option is (kind, default, range or choices,
label, help) and where it appears: the command line flag, the Processing parameter of
``fctl:segment``, the dock, the "advanced" section. The command line (:mod:`.cli`), the
Processing algorithm and the dock (:mod:`fctl_qgis.option_ui`) are built from it, the parameter
table of ``docs/plugin.md`` is generated from it, and ``tests/test_run_options.py`` checks every
front end against it. A new run option = one entry here, its :class:`SegmentOptions` field and
the engine code that uses it.

QGIS-free and torch-free: the plugin's dock imports it before torch is installed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .options import SegmentOptions

# Kinds the front ends know. Numbers lists: (number type, count or None for any count).
NUMBER_LISTS = {"extent": (float, 4), "window": (int, 4), "bands": (int, None),
                "range": (float, 2)}
SCALARS = {"bool": bool, "int": int, "float": float, "choice": str, "text": str}
# Inputs and outputs each front end shows its own way (layer pickers, file dialogs);
# "polygons" is an input polygon layer (a vector file on the command line).
FILES = ("raster", "output", "vector", "model", "polygons")
KINDS = tuple(SCALARS) + tuple(NUMBER_LISTS) + FILES

_FROM_OPTIONS = object()   # default: read from the SegmentOptions field
_UNSET = object()


@dataclass(frozen=True)
class RunOption:
    """One user-facing run option and where it appears.

    Attributes:
        name: the option's name (command line ``dest``, dock key); also the
            :class:`SegmentOptions` field unless ``field`` says otherwise.
        kind: one of :data:`KINDS`.
        label: short text: Processing parameter description, dock label (QGIS only).
        help: one or two sentences: command line help, Processing help, dock tooltip.
        field: the SegmentOptions field; "" = ``name``; None = not an engine option (the QGIS
            adapter uses it, e.g. the pixel size its data provider reads at).
        negate: the front ends show ``not field`` (``--exact-context`` = not shared_context).
        default: the front ends' default; read from SegmentOptions for engine options.
        minimum, maximum: range of numbers; special: text shown for the minimum (0 = auto).
        decimals: decimals shown for floats in QGIS.
        choices: values of a "choice" (Processing: an enum of their indexes).
        cli: ``--flag``, or a bare name for a positional argument; None = not on the command line.
        metavar: command line placeholder of numbers lists.
        processing: Processing parameter name (UPPER_CASE); None = not in Processing.
        dock: offered by the dock panel.
        advanced: under "Advanced" in the Processing dialog and the dock.
        qgis_value: value the QGIS front ends always pass (the option is not offered there).
        old_cli, old_processing: former spellings, still accepted and ignored (deprecated).
        cli_type: the command line's parser of the value, when it takes more than the kind
            (``--pixel-size native``).
    """

    name: str
    kind: str
    label: str
    help: str
    field: str | None = ""
    negate: bool = False
    default: Any = _FROM_OPTIONS
    minimum: float | None = None
    maximum: float | None = None
    special: str | None = None
    decimals: int = 2
    choices: tuple[str, ...] = ()
    cli: str | None = None
    metavar: str | None = None
    processing: str | None = None
    dock: bool = False
    advanced: bool = False
    qgis_value: Any = _UNSET
    old_cli: tuple[str, ...] = ()
    old_processing: tuple[str, ...] = ()
    cli_type: Any = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: unknown kind {self.kind!r}")
        if self.field == "":
            object.__setattr__(self, "field", self.name)
        if self.default is _FROM_OPTIONS:
            if self.field is None:
                raise ValueError(f"{self.name}: an option outside SegmentOptions needs a default")
            value = _options_default(self.field)
            object.__setattr__(self, "default", (not value) if self.negate else value)

    @property
    def in_qgis(self) -> bool:
        return self.processing is not None or self.dock

    @property
    def has_qgis_value(self) -> bool:
        return self.qgis_value is not _UNSET

    @property
    def positional(self) -> bool:
        return self.cli is not None and not self.cli.startswith("-")


def _options_default(name: str) -> Any:
    for f in dataclasses.fields(SegmentOptions):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return None   # required (input, output): no default
    raise ValueError(f"SegmentOptions has no field {name!r}")


_CONTEXT_HELP = (
    "Encode every patch's own medium-context window, as in the paper, instead of sampling its "
    "features from a map encoded once per area of the raster (the default): about 1.2-1.5x "
    "slower on large rasters; labels differ in about 1 % of pixels (same accuracy on "
    "DeepGlobe).")

def _cli_pixel_size(value: str) -> float | str:
    """``auto`` (0), ``native`` or metres, for ``--pixel-size``."""
    from .resolution import parse_pixel_size

    v = parse_pixel_size(value)
    return 0.0 if v == "auto" else v


# Order = the Processing dialog's order (outputs last) and the dock's.
RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("input", "raster", "Input raster",
              "Raster to segment: anything GDAL opens (GeoTIFF, COG, JPEG, PNG, VRT, ...); on "
              "the command line also a folder of tiles or a list file (.txt) of their paths, "
              "read as one mosaic (tiles in another CRS than most, or placed by GCPs, warped "
              "onto it on the fly); in QGIS any raster layer, web layers (XYZ/WMS) read "
              "through their data provider.",
              cli="input", processing="INPUT", dock=True),
    RunOption("model", "model", "Model checkpoint (empty = bundled default)",
              "FCtL checkpoint (.safetensors); empty = the bundled default model.",
              cli="--model", processing="MODEL", dock=True),
    RunOption("bands", "bands", "Input bands (empty = the model's)",
              "1-based raster bands fed to the network, in order (e.g. 3 2 1); empty = the "
              "model's bands (for a model that reads red, green, blue: the bands the raster's "
              "colour interpretation names so, e.g. 3 2 1 of a blue, green, red, NIR product).",
              cli="--bands", metavar="B", processing="BANDS", dock=True),
    RunOption("extent", "extent", "Area to segment",
              "Process only this area (map coordinates of the raster's CRS; in QGIS any CRS, "
              "reprojected to the layer's).", cli="--extent", metavar="XMIN YMIN XMAX YMAX",
              processing="EXTENT", dock=True),
    RunOption("window", "window", "Pixel window", "Process only this pixel window.",
              cli="--window", metavar="XOFF YOFF XSIZE YSIZE"),
    RunOption("mask", "polygons", "Segment only inside these polygons",
              "Polygons outside which nothing is segmented (any CRS; a vector file OGR reads on "
              "the command line; in QGIS any polygon layer, its selected features only when "
              "asked): the area shrinks to their bounding box, patches touching none of them "
              "are not run, pixels outside them are nodata and get no polygon; contexts still "
              "come from the whole raster.", cli="--mask", metavar="POLYGONS",
              processing="MASK", dock=True),
    RunOption("mask_layer", "text", "Mask layer",
              "Layer of the --mask file to use when it holds several (default: its only "
              "layer).", cli="--mask-layer", metavar="NAME"),
    RunOption("device", "choice", "Device",
              "Where the network runs: auto = CUDA when available, else the CPU.",
              choices=("auto", "cpu", "cuda"), cli="--device", processing="DEVICE", dock=True),
    RunOption("batch_size", "int", "Patches per batch (0 = automatic)",
              "Patches per forward pass; 0 = automatic: 8 on a GPU; on the CPU 4 for models with "
              "contexts (their context fusion runs faster in batches) or with small patches "
              "(their encoder runs several at a time), else 1.",
              minimum=0, maximum=256, special="auto", cli="--batch-size",
              processing="BATCH_SIZE", dock=True),
    RunOption("precision", "choice", "Precision",
              "Number format of the network: auto = bfloat16 on GPUs that have it, float32 on "
              "CPUs (on a CPU with AVX512-BF16 the engine measured slower in bf16 than in "
              "float32, and 1.5 % of the labels changed: see the README); fp32; bf16.",
              choices=("auto", "fp32", "bf16"), cli="--precision",
              processing="PRECISION", dock=True, advanced=True),
    RunOption("tta", "bool", "Test-time augmentation (8x slower)",
              "Test-time augmentation: average the predictions of flips x 90-degree rotations "
              "(8 passes, 8x slower).", cli="--tta", processing="TTA", dock=True),
    RunOption("exact_context", "bool", "Exact context (paper, about 1.2-1.5x slower)",
              _CONTEXT_HELP, field="shared_context", negate=True,
              cli="--exact-context", processing="EXACT_CONTEXT", dock=True, advanced=True,
              old_cli=("--shared-context",), old_processing=("SHARED_CONTEXT",)),
    RunOption("min_area", "float", "Minimum polygon area (m², 0 = keep all)",
              "Regions smaller than this are merged into their neighbours before polygonising "
              "(0 = keep all): square metres on the ground in any CRS (geographic ones "
              "included), or the unit chosen as the minimum area's unit.", minimum=0.0,
              maximum=1e12, special="keep all", cli="--min-area", processing="MIN_AREA",
              dock=True),
    RunOption("min_area_unit", "choice", "Unit of the minimum area",
              "Unit of the minimum area: m2 (square metres on the ground), pixels, or map "
              "(square units of the raster's CRS).", choices=("m2", "pixels", "map"),
              cli="--min-area-unit", processing="MIN_AREA_UNIT", dock=True, advanced=True),
    RunOption("sieve_raster", "bool", "Apply the minimum area to the class raster too",
              "Also merge the regions under the minimum area in the class raster (by default "
              "only the polygons are sieved).", cli="--sieve-raster",
              processing="SIEVE_RASTER", dock=True, advanced=True),
    RunOption("pixel_size", "float", "Processing pixel size (m, 0 = the model's)",
              "Pixel size in metres at which the model runs. 0 = automatic: the model's own "
              "(its card's training pixel size) when the raster's differs from it by more than "
              "15 %, so that 10 cm orthophotos and 1 m imagery are seen at the scale the model "
              "learnt; on the command line also 'native' (the raster's own pixel size). Web "
              "layers (XYZ/WMS) are fetched at that pixel size.", minimum=0.0, maximum=1e6,
              special="the model's", decimals=3, cli="--pixel-size", metavar="auto|native|M",
              cli_type=_cli_pixel_size, processing="PIXEL_SIZE", dock=True),
    RunOption("output_grid", "choice", "Grid of the class raster",
              "Where the class raster lies when the model ran at another pixel size than the "
              "raster's: input = on the input raster's own grid, pixel for pixel (nearest "
              "neighbour); processing = on the grid the model ran on. Polygons come from the "
              "processing grid.", choices=("input", "processing"), cli="--output-grid",
              processing="OUTPUT_GRID", dock=True, advanced=True),
    RunOption("min_overlap", "int", "Minimum overlap of neighbouring patches (pixels)",
              "Minimum overlap of neighbouring patches in pixels; must stay below the model's "
              "patch size.", minimum=0, maximum=100000, cli="--min-overlap",
              processing="MIN_OVERLAP", dock=True, advanced=True),
    RunOption("memory_mb", "float", "Memory budget of the merge (MiB)",
              "Memory budget of the logit merge in MiB; rasters too wide for it run in column "
              "groups. Never changes the labels.", minimum=16.0, maximum=1e6, decimals=0,
              cli="--memory-mb", processing="MEMORY_MB", dock=True, advanced=True),
    RunOption("read_workers", "int", "Reading threads (0 = automatic)",
              "Threads reading batches ahead, each with its own handle on the raster; 0 = "
              "automatic: 1 on the CPU, up to 4 next to a GPU.", minimum=0, maximum=32,
              special="auto", cli="--read-workers", metavar="N", processing="READ_WORKERS",
              dock=True, advanced=True),
    RunOption("scale", "range", "Input value range",
              "Raw value range mapped to [0, 1], the same for every band. Default: the "
              "model's for 8-bit rasters; other types (16-bit, float) are stretched per band "
              "as QGIS shows them (2-98 % cumulative count cut onto the model's range, "
              "recorded in the output's metadata).", cli="--scale",
              metavar="LO HI", processing="SCALE", dock=True, advanced=True),
    RunOption("dask", "text", "Dask scheduler (empty = in this process)",
              "Spread the run over a Dask cluster, block by block, with the same labels as "
              "in one process: local or local:N (N worker processes on this machine), or the "
              "address of a running scheduler (tcp://host:8786), whose workers must reach the "
              "raster and the output folder by the same paths. Empty = in this process.",
              cli="--dask", metavar="SCHEDULER", processing="DASK_SCHEDULER", dock=True,
              advanced=True),
    RunOption("block_size", "int", "Block size of a Dask run (pixels)",
              "Side of the blocks a Dask run sends to its workers, in pixels of the processing "
              "grid, rounded to whole patches.", minimum=64, maximum=1000000,
              cli="--block-size", metavar="PX", processing="BLOCK_SIZE", dock=True,
              advanced=True),
    RunOption("threads", "int", "CPU threads",
              "torch CPU threads (default: torch's, one per core); in a Dask run, the threads of "
              "every worker (default: its share of its machine's cores). Runs with the same "
              "thread count give identical labels.", minimum=0, maximum=1024, cli="--threads",
              metavar="N"),
    RunOption("resume", "bool", "Resume a Dask run",
              "Dask runs: keep the finished blocks (next to the output) when the run stops, "
              "and reuse them when the same run is started again.", cli="--resume"),
    RunOption("layer_name", "text", "Polygon layer name",
              "Name of the polygon layer in the GeoPackage.", cli="--layer"),
    RunOption("no_prefetch", "bool", "Do not prefetch",
              "Do not read the next batch in a background thread.", field="prefetch",
              negate=True, cli="--no-prefetch"),
    RunOption("output", "output", "Classes",
              "Classified GeoTIFF to write (uint8 class ids, colour table, 255 = nodata).",
              cli="output", processing="OUTPUT_RASTER"),
    RunOption("vector", "vector", "Class polygons",
              "Also write class polygons to this GeoPackage (fields class_id, class_name, area).",
              cli="--vector", processing="OUTPUT_VECTOR"),
)

OPTIONS_BY_NAME: dict[str, RunOption] = {o.name: o for o in RUN_OPTIONS}


def option(name: str) -> RunOption:
    return OPTIONS_BY_NAME[name]


def cli_options() -> list[RunOption]:
    return [o for o in RUN_OPTIONS if o.cli]


def processing_options() -> list[RunOption]:
    return [o for o in RUN_OPTIONS if o.processing]


def dock_options() -> list[RunOption]:
    return [o for o in RUN_OPTIONS if o.dock]


def defaults() -> dict[str, Any]:
    """Every option's default, by option name."""
    return {o.name: o.default for o in RUN_OPTIONS}


def parse_numbers(values: str | Sequence[str], kind: type, count: int | None, what: str
                  ) -> list:
    """Numbers given as separate arguments and/or separated by commas or spaces."""
    if isinstance(values, str):
        values = [values]
    parts = [v for s in values for v in str(s).replace(",", " ").split()]
    try:
        out = [kind(v) for v in parts]
    except ValueError:
        raise ValueError(f"{what} takes numbers, got {' '.join(values)!r}") from None
    if count is not None and len(out) != count:
        raise ValueError(f"{what} takes {count} numbers, got {len(out)}")
    return out


def qgis_values() -> dict[str, Any]:
    """Values of the options QGIS does not offer but always sets (by option name)."""
    return {o.name: o.qgis_value for o in RUN_OPTIONS if o.has_qgis_value}


def segment_options(values: Mapping[str, Any], **fields: Any) -> SegmentOptions:
    """A :class:`SegmentOptions` from front-end ``values`` (by option name; missing ones keep
    their defaults; negated toggles flipped back; non-engine options ignored) and ``fields``
    set as they are (by SegmentOptions field, e.g. ``input=`` and ``output=``)."""
    unknown = sorted(set(values) - set(OPTIONS_BY_NAME))
    if unknown:
        raise ValueError(f"unknown run option(s) {unknown}")
    kw: dict[str, Any] = {}
    for name, value in values.items():
        opt = OPTIONS_BY_NAME[name]
        if opt.field is None:
            continue
        if opt.negate:
            value = not value
        elif opt.kind in ("extent", "window", "range") and value is not None:
            value = tuple(value)
        kw[opt.field] = value
    kw.update(fields)
    return SegmentOptions(**kw)


# ---------------------------------------------------------------------------- documentation
def _format_default(o: RunOption) -> str:
    if o.kind in ("raster", "output"):
        return "required"
    if o.default is None or o.default == "":
        return "empty"
    if o.kind == "choice":
        return f"{o.choices.index(o.default)} ({o.default})"
    if o.special is not None and o.default == o.minimum:
        return f"{o.default:g} ({o.special})"
    if isinstance(o.default, bool):
        return str(o.default).lower()
    return f"{o.default:g}" if isinstance(o.default, float) else str(o.default)


def markdown_table(options: Iterable[RunOption] | None = None) -> str:
    """The Markdown table of the Processing parameters (``docs/plugin.md``)."""
    rows = ["| parameter | command line | default | meaning |", "|---|---|---|---|"]
    for o in options if options is not None else processing_options():
        meaning = o.help
        if o.kind == "choice":
            meaning += " Values: " + ", ".join(f"{i} {c}" for i, c in enumerate(o.choices)) + "."
        if o.old_processing:
            meaning += (" Replaces " + ", ".join(f"`{p}`" for p in o.old_processing) +
                        " (still accepted, ignored).")
        flag = "-" if not o.cli else f"`{o.cli}`" + (" (argument)" if o.positional else "")
        name = f"`{o.processing}`" + (" (advanced)" if o.advanced else "")
        rows.append(f"| {name} | {flag} | {_format_default(o)} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":   # the table of docs/plugin.md
    print(markdown_table())
