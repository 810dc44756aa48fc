"""Agreement of labels for the same ground at different pixel sizes (issue: geographic
correctness). A DeepGlobe image (0.5 m) is given a projected CRS, resampled to 0.25 m (cubic)
and 1 m (average), each segmented with the given pixel-size mode, and compared with the 0.5 m
run on the 0.5 m grid; with ``--truth MASK`` (a DeepGlobe mask), also each run's pixel accuracy
against the ground truth (unknown pixels left out), so that a disagreement can be read as the
coarser run's loss or as the 0.5 m run's own error; with ``--shift N``, also the 0.5 m raster
less its first N rows and columns, the share of labels that merely moving the patch grid changes;
with ``--translate N``, two windows of the 0.5 m raster of the same size N px apart (the same
patch grid, the ground under it moved by N px): the share of labels a pure translation changes.
Usage: python tools/resolution_agreement.py IMAGE [--model M] [--modes auto,native] [--truth MASK]
       [--shift N] [--translate N] [--min-overlap PX]
"""
import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
from osgeo import gdal, osr

from model_core.inference import segment
from model_core.inference.options import SegmentOptions


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--model")
    ap.add_argument("--modes", default="auto,native")
    ap.add_argument("--sizes", default="0.25,1.0")
    ap.add_argument("--tta", action="store_true", help="segment with test-time augmentation")
    ap.add_argument("--output-grid", default="input", choices=("input", "processing"))
    ap.add_argument("--truth", help="DeepGlobe mask of IMAGE: adds each run's accuracy")
    ap.add_argument("--shift", type=int, default=0, metavar="N",
                    help="also segment the 0.5 m raster without its first N rows and columns "
                         "(same pixels, patch grid moved by N px): how much of the disagreement "
                         "any small change of the input causes, whatever the pixel size")
    ap.add_argument("--translate", type=int, default=0, metavar="N",
                    help="also segment two same-size windows of the 0.5 m raster N px apart "
                         "and compare them on their common ground: the labels a translation "
                         "of the input by N px changes")
    ap.add_argument("--min-overlap", type=int, help="the engine's minimum patch overlap (px)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fctl-agreement-") as folder:
        print(json.dumps(measure(args, Path(folder)), indent=1))


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32631)
    base = tmp / "0.5.tif"
    src = gdal.Open(args.image)
    ds = gdal.Translate(str(base), src, outputSRS=srs.ExportToWkt(),
                        outputBounds=(500000, 5000000 + 0.5 * src.RasterYSize,
                                      500000 + 0.5 * src.RasterXSize, 5000000))
    w, h = ds.RasterXSize, ds.RasterYSize
    ds = None
    paths = {0.5: base}
    for px in (float(v) for v in args.sizes.split(",")):
        paths[px] = tmp / f"{px}.tif"
        gdal.Warp(str(paths[px]), str(base), xRes=px, yRes=px,
                  resampleAlg="average" if px > 0.5 else "cubic")
    if args.shift:
        paths["shifted"] = tmp / "shifted.tif"
        gdal.Translate(str(paths["shifted"]), str(base),
                       srcWin=(args.shift, args.shift, w - args.shift, h - args.shift))
    labels = {}
    for mode in args.modes.split(","):
        for px, path in paths.items():
            out = tmp / f"out_{px}_{mode}.tif"
            opts = SegmentOptions(input=str(path), output=str(out), model=args.model,
                                  device="cpu")
            opts.pixel_size = mode
            opts.output_grid = args.output_grid
            opts.tta = args.tta
            if args.min_overlap is not None:
                opts.min_overlap = args.min_overlap
            segment(opts)
            on_base = gdal.Warp("", str(out), format="MEM", width=w, height=h,
                                outputBounds=(500000, 5000000, 500000 + 0.5 * w,
                                              5000000 + 0.5 * h), resampleAlg="near")
            labels[(px, mode)] = on_base.ReadAsArray()
    result = {}
    n = args.shift
    for (px, mode), lab in labels.items():
        ref = labels[(0.5, mode)]
        same = (lab == ref)[n:, n:] if px == "shifted" else lab == ref
        name = f"shifted by {n} px" if px == "shifted" else f"{px} m"
        result[f"{name}, {mode}"] = round(float(same.mean()), 4)
    if args.translate:
        result[f"translated by {args.translate} px"] = translation_agreement(
            base, w, h, args, tmp)
    if args.truth:
        from model_core.training.data import deepglobe_mask_to_ids

        truth = deepglobe_mask_to_ids(gdal.Open(args.truth).ReadAsArray())
        known = truth != 0
        for (px, mode), lab in labels.items():
            if px != "shifted":
                result[f"accuracy {px} m, {mode}"] = round(float((lab == truth)[known].mean()),
                                                           4)
    return result


def translation_agreement(base: Path, w: int, h: int, args: argparse.Namespace,
                          tmp: Path) -> float:
    """Share of the common ground labelled alike in two (w - n) x (h - n) windows of ``base``
    at offsets 0 and n: the patch grid is the same, the ground under it moves by n px."""
    n = args.translate
    labels = []
    for off in (0, n):
        path, out = tmp / f"translated_{off}.tif", tmp / f"out_translated_{off}.tif"
        gdal.Translate(str(path), str(base), srcWin=(off, off, w - n, h - n))
        opts = SegmentOptions(input=str(path), output=str(out), model=args.model, device="cpu")
        opts.tta = args.tta
        if args.min_overlap is not None:
            opts.min_overlap = args.min_overlap
        segment(opts)
        labels.append(gdal.Open(str(out)).ReadAsArray())
    return round(float((labels[0][n:, n:] == labels[1][:-n, :-n]).mean()), 4)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
