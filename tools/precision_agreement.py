"""Label agreement of bf16 with fp32 and the mIoU of both, through the engine as users run it
(issue "Fast by default"). Usage:
python tools/precision_agreement.py [--model M] [--root ../shared/data/deepglobe] [--ids 6399,...]
Prints JSON: per image agreement, the mIoU of each precision, and the wall time of each run."""
import argparse
import json
import logging
import time

import numpy as np

from model_core.checkpoint import load_checkpoint
from model_core.training.data import load_deepglobe
from model_core.training.datasets import DEEPGLOBE_SPLIT
from model_core.training.evaluate import segment_file
from model_core.training.metrics import Scores, confusion_matrix


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--root", default="../shared/data/deepglobe")
    ap.add_argument("--ids", default=",".join(DEEPGLOBE_SPLIT["test"]))
    ap.add_argument("--exact-context", action="store_true")
    args = ap.parse_args()
    model, card = load_checkpoint(args.model)
    k = card.config.num_classes
    cms = {p: np.zeros((k, k), np.int64) for p in ("fp32", "bf16")}
    out = {"images": {}, "seconds": {"fp32": 0.0, "bf16": 0.0}}
    for im in load_deepglobe(args.root, args.ids.split(",")):
        path = f"{args.root}/{im.id}_sat.jpg"
        labels = {}
        for p in ("fp32", "bf16"):
            t0 = time.time()
            labels[p] = segment_file(path, model, card, False, "cpu", 0,
                                     shared_context=not args.exact_context, precision=p)
            out["seconds"][p] += time.time() - t0
            cms[p] += confusion_matrix(im.label, labels[p], k, card.ignore_index)
        out["images"][im.id] = round(float((labels["fp32"] == labels["bf16"]).mean()), 5)
    for p, cm in cms.items():
        out[f"miou_{p}"] = round(Scores(cm, card.ignore_index).miou, 5)
    out["agreement"] = round(float(np.mean(list(out["images"].values()))), 5)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
