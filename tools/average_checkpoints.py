"""Average the weights of checkpoints of one run (the last epochs of a poly-decay schedule):
a flatter, less noisy model than any single epoch. Select the result on val like any epoch.
Usage: python tools/average_checkpoints.py OUT.safetensors A.safetensors B.safetensors ..."""
import sys
from pathlib import Path

import torch

from model_core.checkpoint import load_checkpoint, save_checkpoint


def main(out: str, paths: list[str]) -> None:
    model, card = load_checkpoint(paths[-1])
    states = [load_checkpoint(p)[0].state_dict() for p in paths]
    avg = {}
    for k, v in states[-1].items():
        if v.is_floating_point():
            avg[k] = torch.stack([s[k] for s in states]).mean(0)
        else:   # counters (BatchNorm's num_batches_tracked): the last one's
            avg[k] = v
    model.load_state_dict(avg)
    card.provenance = {**card.provenance,
                       "averaged_from": [Path(p).name for p in paths]}
    save_checkpoint(out, model, card)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
