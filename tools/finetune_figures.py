"""The README's fine-tuning figures: Inria Kitsap tile 11 (../shared/data/inria), train on its
west half, evaluate on its east half, bundled model vs fine-tuned, building IoU and wall time.

The 1000 x 1000 RGB (1.5 m/px) gets the georeferencing of the full-resolution ground truth
(kitsap11.tif, 0.3 m, NAD83 / UTM 10N) scaled by 5; the labels are that 0.3 m ground truth as
0/1 class ids, so fctl:train resamples them onto the 1.5 m raster (nearest neighbour). The
bundled DeepGlobe model has no building class: its "urban" class is scored as buildings.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python tools/finetune_figures.py --steps 200 OUT_DIR
    # trained at the bundled model's 0.5 m instead of the raster's 1.5 m (fctl:train PIXEL_SIZE)
    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python tools/finetune_figures.py --steps 200 \
        --threads 2 --skip-bundled --pixel-size 0.5 OUT_DIR3
    # the control run of the README: a random classifier, as fine-tuning worked before
    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python tools/finetune_figures.py --steps 200 \
        --skip-bundled --fresh-classifier OUT_DIR2
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "inria"


def prepare(out: Path) -> tuple[Path, Path]:
    """(georeferenced 1.5 m RGB GeoTIFF, 0.3 m 0/1 label GeoTIFF with class names)."""
    from osgeo import gdal

    gt_ds = gdal.Open(str(DATA / "TIF_GT" / "kitsap11.tif"))
    gt = gt_ds.GetGeoTransform()
    rgb = out / "kitsap11_rgb_1.5m.tif"
    if not rgb.is_file():
        src = gdal.Open(str(DATA / "1000x1000" / "RGB.png"))
        ds = gdal.GetDriverByName("GTiff").CreateCopy(str(rgb), src)
        ds.SetGeoTransform((gt[0], gt[1] * 5, 0.0, gt[3], 0.0, gt[5] * 5))
        ds.SetProjection(gt_ds.GetProjection())
        ds = None
    lab = out / "kitsap11_buildings_0.3m.tif"
    if not lab.is_file():
        arr = (gt_ds.GetRasterBand(1).ReadAsArray() > 127).astype(np.uint8)
        ds = gdal.GetDriverByName("GTiff").Create(str(lab), arr.shape[1], arr.shape[0], 1,
                                                  gdal.GDT_Byte, ["COMPRESS=DEFLATE"])
        ds.SetGeoTransform(gt)
        ds.SetProjection(gt_ds.GetProjection())
        ds.GetRasterBand(1).WriteArray(arr)
        ds.GetRasterBand(1).SetCategoryNames(["background", "building"])
        ds = None
    return rgb, lab


def halves(rgb: Path) -> tuple[tuple, tuple]:
    from osgeo import gdal

    ds = gdal.Open(str(rgb))
    gt, w, h = ds.GetGeoTransform(), ds.RasterXSize, ds.RasterYSize
    x0, y1, x1, y0 = gt[0], gt[3], gt[0] + gt[1] * w, gt[3] + gt[5] * h
    xm = gt[0] + gt[1] * (w // 2)
    return (x0, y0, xm, y1), (xm, y0, x1, y1)


def bundled_building_iou(rgb: Path, lab: Path, extent: tuple, work: Path) -> dict:
    """Bundled model, segmented as fctl:segment runs it (automatic pixel size), "urban" scored
    as building against the labels of ``extent``."""
    from osgeo import gdal

    from model_core.checkpoint import read_card
    from model_core.inference import segment
    from model_core.inference.options import SegmentOptions
    from model_core.training.area import read_training_area
    from model_core.training.gis import LabelSource
    from model_core.training.gis_evaluate import _aligned

    card = read_card(ROOT / "resources" / "models" / "default.safetensors")
    area = read_training_area(str(rgb), LabelSource(str(lab)), in_chans=3, card_bands=[1, 2, 3],
                              card_scale=card.scale, extent=extent)
    out = work / "bundled_classes.tif"
    t0 = time.perf_counter()
    segment(SegmentOptions(input=str(rgb), output=str(out), window=area.window, device="cpu"))
    seconds = time.perf_counter() - t0
    ds = gdal.Open(str(out))
    pred = ds.GetRasterBand(1).ReadAsArray()
    label = _aligned(area.label, area.grid.geotransform, pred, ds.GetGeoTransform())
    urban = [c.id for c in card.classes if c.name == "urban"][0]
    keep = label != 255
    p, t = pred[keep] == urban, label[keep] == 1
    return {"building_iou": float((p & t).sum() / max(1, (p | t).sum())),
            "seconds": round(seconds, 1)}


def _fresh_classifier() -> None:
    """Fine-tuning as before the class mapping: the classifier tensors dropped from the base
    weights (fresh initialisation), the starting weights not validated."""
    from safetensors.torch import load_file, save_file

    from model_core.training import finetune, loop
    from model_core.training.class_map import class_dims

    def fresh(base_path, base, config, train_img, classes, work, opts, cancelled):
        drop = class_dims(base.config)
        path = work / "init.safetensors"
        save_file({k: v for k, v in load_file(base_path).items() if k not in drop}, str(path))
        return str(path), None

    finetune._mapped_init = fresh
    train = loop.train

    def no_start_validation(config, tr, va, info, out, tc, **kw):
        tc.validate_start = False
        return train(config, tr, va, info, out, tc, **kw)

    loop.train = no_start_validation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--patch", type=int, default=0, help="patch size (0 = the base model's)")
    ap.add_argument("--lr", type=float, default=0.0, help="learning rate (0 = fctl:train's)")
    ap.add_argument("--pixel-size", type=float, default=0.0,
                    help="training pixel size in metres (fctl:train's PIXEL_SIZE; 0 = the "
                         "raster's own)")
    ap.add_argument("--skip-bundled", action="store_true", help="do not score the bundled model")
    ap.add_argument("--fresh-classifier", action="store_true",
                    help="control run: a randomly initialised classifier instead of the one "
                         "mapped from the base model's classes, no validation of the start")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    from model_core.training.finetune import FineTuneOptions, fine_tune
    from model_core.training.gis import LabelSource
    from model_core.training.gis_evaluate import evaluate_labels

    if args.fresh_classifier:
        _fresh_classifier()
    args.out.mkdir(parents=True, exist_ok=True)
    rgb, lab = prepare(args.out)
    west, east = halves(rgb)
    res: dict = {"steps": args.steps, "threads": args.threads, "patch": args.patch,
                 "lr": args.lr or None, "pixel_size": args.pixel_size or None}
    if not args.skip_bundled:
        res["bundled_east"] = bundled_building_iou(rgb, lab, east, args.out)
    print(json.dumps(res), flush=True)
    model = args.out / "kitsap_buildings.safetensors"
    t0 = time.perf_counter()
    ft = fine_tune(FineTuneOptions(str(rgb), LabelSource(str(lab)), str(model), extent=west,
                                   steps=args.steps, threads=args.threads, device="cpu",
                                   patch_size=args.patch or None,
                                   pixel_size=args.pixel_size or None,
                                   **({"learning_rate": args.lr} if args.lr else {}),
                                   log_csv=str(args.out / "log.csv"),
                                   plot_png=str(args.out / "log.png")))
    from model_core.checkpoint import read_card

    prov = read_card(model).provenance
    res["fine_tune"] = {"seconds": round(time.perf_counter() - t0, 1),
                        "validation": ft.validation, "selected": prov.get("selected"),
                        "epochs": prov.get("epochs"),
                        "classifier_from": prov.get("classifier_initialised_from")}
    ev = evaluate_labels(str(rgb), LabelSource(str(lab)), str(model), extent=east, device="cpu")
    res["fine_tuned_east"] = {"building_iou": ev.scores.iou[1], "miou": ev.scores.miou,
                              "pixel_accuracy": ev.scores.pixel_accuracy,
                              "seconds": ev.seconds}
    (args.out / "figures.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
