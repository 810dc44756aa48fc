"""Dataset choice for the command line: layout + split -> images and the card's data info."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from .data import (DEEPGLOBE_CLASSES, DEEPGLOBE_IGNORE, INRIA_CLASSES, LabelledImage,
                   load_deepglobe, load_inria, load_raster_pair, parse_ids)
from .settings import DataInfo

log = logging.getLogger(__name__)

LAYOUTS = ("deepglobe", "inria", "raster")

# The DeepGlobe split of ../shared/data/README.md (test only for the final figures).
DEEPGLOBE_SPLIT = {
    "train": ["119", "266", "606", "2774", "3484", "10233", "19627", "104113", "180902", "482365"],
    "val": ["855", "172307"],
    "test": ["6399", "10452", "794214"],
}


def parse_classes(spec: str) -> list[tuple[int, str, tuple[int, int, int]]]:
    """``"0:background:#000000,1:building:#ff0000"`` -> [(id, name, (r, g, b))]."""
    out = []
    for item in spec.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3:
            raise ValueError(f"class {item!r}: write classes as id:name:#rrggbb, comma-separated")
        cid, name, col = parts
        col = col.lstrip("#")
        if len(col) != 6:
            raise ValueError(f"class {item!r}: colour must be #rrggbb")
        out.append((int(cid), name, tuple(int(col[i:i + 2], 16) for i in (0, 2, 4))))
    return out


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--layout", choices=LAYOUTS, default="deepglobe",
                   help="deepglobe: <id>_sat.jpg + <id>_mask.png; inria: images/*.tif + gt/*.tif; "
                        "raster: --image/--labels pairs (label raster or polygon layer)")
    g.add_argument("--root", help="dataset folder (deepglobe, inria layouts)")
    g.add_argument("--train-ids", help="training ids: comma-separated or a text file")
    g.add_argument("--val-ids", help="validation ids (model selection)")
    g.add_argument("--image", action="append", default=[], help="raster layout: training image")
    g.add_argument("--labels", action="append", default=[],
                   help="raster layout: label raster or polygon layer of each --image")
    g.add_argument("--val-image", action="append", default=[])
    g.add_argument("--val-labels", action="append", default=[])
    g.add_argument("--field", help="class-id field of polygon label layers (without it every "
                                   "polygon is class 1 and the rest class 0: building "
                                   "footprints)")
    g.add_argument("--classes", help="raster layout: id:name:#rrggbb,... (default: ids found)")
    g.add_argument("--ignore-index", type=int, default=None,
                   help="label value excluded from loss and metrics (deepglobe: 0)")
    g.add_argument("--bands", help="1-based input bands, e.g. 1,2,3 (raster layout)")
    g.add_argument("--scale", help="raw range mapped to [0,1], lo,hi (default 0,255)")
    g.add_argument("--gsd", type=float,
                   help="pixel size of the data in metres (default: DeepGlobe 0.5, Inria 0.3, "
                        "rasters: from their georeferencing); recorded in the model's card")
    g.add_argument("--train-pixel-size", type=float, metavar="M",
                   help="resample the training and validation images to this pixel size in "
                        "metres first (area average when coarser, cubic when finer; labels "
                        "nearest), to train a model for imagery of another resolution; the card "
                        "records M")


def load_split(args: argparse.Namespace, which: str) -> list[LabelledImage]:
    """Images of the ``train``/``val``/``test`` split described by ``args``."""
    ids_arg = {"train": args.train_ids, "val": args.val_ids,
               "test": getattr(args, "test_ids", None)}[which]
    if args.layout in ("deepglobe", "inria"):
        if not args.root:
            raise ValueError(f"--root is required with --layout {args.layout}")
        if not Path(args.root).is_dir():
            raise FileNotFoundError(f"dataset folder {args.root} does not exist")
        ids = parse_ids(ids_arg)
        if ids is None and args.layout == "deepglobe":
            ids = DEEPGLOBE_SPLIT[which]
        if ids is None:
            return []
        loader = load_deepglobe if args.layout == "deepglobe" else load_inria
        return loader(args.root, ids)
    images = {"train": args.image, "val": args.val_image,
              "test": getattr(args, "test_image", [])}[which]
    labels = {"train": args.labels, "val": args.val_labels,
              "test": getattr(args, "test_labels", [])}[which]
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} {which} image(s) but {len(labels)} label file(s): give "
                         "one --labels per --image")
    bands = raster_bands(args)
    return binary_masks_as_classes([load_raster_pair(i, lab, bands=bands, field=args.field)
                                    for i, lab in zip(images, labels)], args.ignore_index)


def binary_masks_as_classes(images: list[LabelledImage], ignore_index: int | None
                            ) -> list[LabelledImage]:
    """Labels holding only 0 and 255 (Inria, SpaceNet and most building masks) are a binary
    mask: 255 becomes class 1, as ``evaluate`` reads them, instead of the 256th class of a
    model the engine could not write (unless ``--ignore-index 255`` says 255 is unlabelled)."""
    if ignore_index == 255 or not images:
        return images
    values = set().union(*(np.unique(im.label).tolist() for im in images))
    if values != {0, 255}:
        return images
    log.info("the labels hold only 0 and 255: read as a binary mask, classes 0 and 1 (give "
             "--ignore-index 255 if 255 marks unlabelled pixels)")
    return [LabelledImage(im.id, im.image, np.where(im.label == 255, 1, im.label).astype(np.uint8))
            for im in images]


def raster_bands(args: argparse.Namespace) -> list[int] | None:
    """The raster layout's bands: --bands, else for a three-band raster whose bands say red,
    green and blue in another order (a blue, green, red file) those, in that order, as the
    engine reads them for a model of bands 1, 2, 3; else None (every band, in order)."""
    if args.bands:
        return [int(b) for b in args.bands.split(",")]
    if not args.image:
        return None
    from ..inference.checks import rgb_by_colour
    from ..inference.reader import GdalReader

    with GdalReader(args.image[0]) as r:
        named = rgb_by_colour(r.color_interpretations)
        if r.band_count == 3 and named is not None and named != [1, 2, 3]:
            log.info("%s: bands %d, %d, %d are red, green and blue (its colour interpretation): "
                     "trained in that order", args.image[0], *named)
            return named
    return None


def data_gsd(args: argparse.Namespace) -> float | None:
    """The data's pixel size in metres: --gsd, the layout's, or the first raster's."""
    if args.gsd:
        return args.gsd
    if args.layout == "deepglobe":
        return 0.5
    if args.layout == "inria":
        return 0.3
    if args.image:
        from ..ground import ground_of
        from ..inference.reader import GdalReader

        with GdalReader(args.image[0]) as r:
            gt = r.geotransform if r.has_geotransform else None
            return ground_of(gt, r.crs_wkt, r.width, r.height).pixel_size_m
    return None


def resample_images(images: list[LabelledImage], from_m: float, to_m: float
                    ) -> list[LabelledImage]:
    """Images (and labels) resampled from ``from_m`` to ``to_m`` metres per pixel with GDAL, as
    the engine resamples rasters: average when coarser, cubic when finer, labels nearest."""
    from ..resample import resample_labelled

    return [LabelledImage(im.id, *resample_labelled(im.image, im.label, from_m, to_m))
            for im in images]


def data_info(args: argparse.Namespace, images: list[LabelledImage]) -> DataInfo:
    scale = tuple(float(v) for v in args.scale.split(",")) if args.scale else (0.0, 255.0)
    if args.layout == "deepglobe":
        ignore = DEEPGLOBE_IGNORE if args.ignore_index is None else args.ignore_index
        return DataInfo(DEEPGLOBE_CLASSES, ignore, [1, 2, 3], scale, _gsd(args),
                        name="FCtL DeepGlobe land cover",
                        description="DeepGlobe Land Cover classes (unknown is ignored)")
    if args.layout == "inria":
        return DataInfo(INRIA_CLASSES, args.ignore_index, [1, 2, 3], scale, _gsd(args),
                        name="FCtL Inria buildings")
    if args.classes:
        classes = parse_classes(args.classes)
    else:
        found = sorted(set(np.unique(np.concatenate([np.unique(im.label) for im in images]))))
        if args.ignore_index == 255:   # unlabelled: not a class of the model
            found = [c for c in found if c != 255]
        elif 255 in found:
            raise ValueError("the labels use 255 as a class, but class rasters are 8-bit with "
                             "255 = nodata, so a model cannot output it: give --ignore-index "
                             "255 if 255 marks unlabelled pixels, or number the classes 0..254")
        rng = np.random.default_rng(0)
        classes = [(int(c), f"class {c}", tuple(int(v) for v in rng.integers(0, 256, 3)))
                   for c in found]
    bands = raster_bands(args) or list(range(1, images[0].image.shape[0] + 1))
    return DataInfo(classes, args.ignore_index, bands, scale, _gsd(args))


def _gsd(args: argparse.Namespace) -> float | None:
    """The card's pixel size: the training pixel size when the images were resampled."""
    return getattr(args, "train_pixel_size", None) or data_gsd(args)
