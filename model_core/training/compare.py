"""``python -m model_core compare``: train the FCtL config and the FCN-8s baseline identically
(same data, seed, budget and recipe) and evaluate both through the streaming engine.

Writes ``<out>/fctl/`` and ``<out>/fcn8s/`` run folders, ``<out>/comparison.json`` and prints a
table. Runs already trained in those folders are reused with ``--skip-train``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
from pathlib import Path
from typing import Any

from .cli import add_model_args, add_train_args, build_config, train_config
from .datasets import add_data_args, data_info, load_split
from .evaluate import EvalItem, evaluate, format_results

log = logging.getLogger(__name__)

CONFIGS = ("fctl", "fcn8s")


def compare_table(results: dict[str, dict[str, Any]], mode: str = "no_tta") -> str:
    """Per-class IoU of each model side by side."""
    names = list(results)
    classes = list(results[names[0]][mode]["iou"])
    rows = [f"{'class':<14}" + "".join(f"{n:>10}" for n in names)]
    for c in classes:
        rows.append(f"{c:<14}" + "".join(f"{100 * results[n][mode]['iou'][c]:>10.2f}"
                                         for n in names))
    rows.append(f"{'mIoU':<14}" + "".join(f"{100 * results[n][mode]['miou']:>10.2f}"
                                          for n in names))
    return "\n".join(rows)


def run_compare(args: argparse.Namespace) -> int:
    from .evaluate import items_from_args
    from .loop import train

    out = Path(args.out)
    if not args.skip_train:
        train_images = load_split(args, "train")
        val_images = load_split(args, "val")
        info = data_info(args, train_images)
        num_classes = max(c[0] for c in info.classes) + 1
        for name in CONFIGS:
            a = copy.copy(args)
            a.config = name
            config = build_config(a, num_classes, train_images[0].image.shape[0])
            run_info = copy.deepcopy(info)
            run_info.provenance["comparison"] = f"{name} of `model_core compare` (same budget)"
            log.info("training %s", name)
            train(config, train_images, val_images, run_info, out / name,
                  train_config(args, train_images))
    eval_args = copy.copy(args)
    eval_args.ids, eval_args.split = args.test_ids, "test"
    eval_args.image, eval_args.labels = args.test_image, args.test_labels
    items: list[EvalItem] = items_from_args(eval_args)
    modes = {"off": (False,), "on": (True,), "both": (False, True)}[args.tta]
    results = {}
    for name in CONFIGS:
        ckpt = out / name / "best.safetensors"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{ckpt} is missing: train first (without --skip-train)")
        results[name] = evaluate(str(ckpt), items, modes, args.device, args.eval_batch_size)
        print(f"== {name}\n{format_results(results[name])}\n")
    for mode in (m for m in ("no_tta", "tta") if m in results[CONFIGS[0]]):
        print(f"== test IoU ({mode})\n{compare_table(results, mode)}\n")
    (out / "comparison.json").write_text(json.dumps(results, indent=2))
    print(f"written {out / 'comparison.json'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="train FCtL and the FCN-8s baseline identically and "
                                       "evaluate both on the test split")
    add_data_args(p)
    add_model_args(p)
    add_train_args(p)
    p.add_argument("--test-ids", help="test ids (deepglobe default: the README's test split)")
    p.add_argument("--test-image", action="append", default=[])
    p.add_argument("--test-labels", action="append", default=[])
    p.add_argument("--tta", choices=("off", "on", "both"), default="both")
    p.add_argument("--eval-batch-size", type=int, default=4)
    p.add_argument("--out", required=True, help="folder of the two runs and the comparison")
    p.add_argument("--skip-train", action="store_true", help="evaluate existing runs only")
    p.set_defaults(func=run_compare, config="fctl")
