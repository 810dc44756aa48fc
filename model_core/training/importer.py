"""``python -m model_core import-pth``: a PyTorch ``.pth`` state dict -> safetensors checkpoint.

The ``.pth`` is read with ``torch.load(weights_only=True)`` only; the card (config, classes,
bands, scaling ...) comes from a JSON file or from an existing checkpoint of the same network.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..checkpoint import FORMAT, ModelCard, import_pth, read_card


def run_import(args: argparse.Namespace) -> int:
    if bool(args.card) == bool(args.like):
        raise ValueError("give the model card either as --card card.json or --like model.safetensors")
    if args.like:
        card = read_card(args.like)
    else:
        p = Path(args.card)
        if not p.is_file():
            raise FileNotFoundError(f"card file {p} does not exist")
        d = json.loads(p.read_text())
        d.setdefault("format", FORMAT)
        card = ModelCard.from_dict(d)
    if args.name:
        card.name = args.name
    out = import_pth(args.pth, args.out, card)
    print(f"written {out}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-pth", help="convert a PyTorch .pth state dict (loaded safely)")
    p.add_argument("pth", help="PyTorch file holding the network's state_dict")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--card", help="model card as JSON (ModelCard fields, config included)")
    p.add_argument("--like", help="take the card of this existing checkpoint")
    p.add_argument("--name", help="model name in the card")
    p.set_defaults(func=run_import)
