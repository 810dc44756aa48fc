"""How much LCF and ALE contribute: the norms of their outputs relative to X_I's, over every
patch of the given images as the engine runs them, and the share of labels that change when
each module's output is zeroed. Usage:
python tools/context_contributions.py [--model M] [--ids 6399,10452,794214] [--root DIR]"""
import argparse
import json
import logging

import numpy as np
import torch

from model_core.checkpoint import load_checkpoint
from model_core.training.datasets import DEEPGLOBE_SPLIT
from model_core.training.evaluate import segment_file


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--root", default="../shared/data/deepglobe")
    ap.add_argument("--ids", default=",".join(DEEPGLOBE_SPLIT["test"]))
    args = ap.parse_args()
    model, card = load_checkpoint(args.model)
    sums = {"x_i": 0.0, "lcf": 0.0, "ale": 0.0}
    zero = {"lcf": False, "ale": False}

    def hook(name):
        def fn(module, inputs, output):
            sums[name] += float(output.float().pow(2).sum())
            if name == "lcf":
                sums["x_i"] += float(inputs[0].float().pow(2).sum())
            return torch.zeros_like(output) if zero[name] else None
        return fn

    out = {"images": args.ids.split(",")}
    agree = {"lcf": [], "ale": []}
    for i in out["images"]:
        path = f"{args.root}/{i}_sat.jpg"
        full = None
        for case in ("full", "lcf", "ale"):
            zero.update(lcf=case == "lcf", ale=case == "ale")
            # the engine runs a fused copy of the model: hook the copy's modules
            import model_core.inference.predict as pred
            orig = pred.fuse_for_inference

            def fuse_and_hook(m, orig=orig):
                n = orig(m)
                m.lcf.register_forward_hook(hook("lcf"))
                m.ale.register_forward_hook(hook("ale"))
                return n
            pred.fuse_for_inference = fuse_and_hook
            try:
                labels = segment_file(path, model, card, False, "cpu", 0, precision="fp32")
            finally:
                pred.fuse_for_inference = orig
            if case == "full":
                full = labels
                ratios = {k: (sums[k] / sums["x_i"]) ** 0.5 for k in ("lcf", "ale")}
                out.setdefault("norm_ratio", []).append(ratios)
            else:
                agree[case].append(float((labels != full).mean()))
            for k in sums:
                sums[k] = 0.0
    out["lcf_over_x_i"] = float(np.mean([r["lcf"] for r in out["norm_ratio"]]))
    out["ale_over_x_i"] = float(np.mean([r["ale"] for r in out["norm_ratio"]]))
    out["labels_changed_without_lcf"] = float(np.mean(agree["lcf"]))
    out["labels_changed_without_ale"] = float(np.mean(agree["ale"]))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
