"""``python -m model_core import-pth``: a PyTorch ``.pth`` state dict -> safetensors checkpoint.

The ``.pth`` is read with ``torch.load(weights_only=True)`` only; the card (config, classes,
bands, scaling ...) comes from a JSON file or from an existing checkpoint of the same network.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # the checkpoint module imports torch: not needed to build the parser
    from ..checkpoint import ModelCard


def run_import(args: argparse.Namespace) -> int:
    from ..checkpoint import import_pth, read_card

    if bool(args.card) == bool(args.like):
        raise ValueError("give the model card either as --card card.json or --like "
                         "model.safetensors")
    if args.like:
        card = read_card(args.like)
    else:
        card = card_from_json(args.card)
    if args.name:
        card.name = args.name
    out = import_pth(args.pth, args.out, card)
    print(f"written {out}")
    return 0


def card_from_json(path: str | Path) -> ModelCard:
    """The model card in JSON file ``path``, or a ValueError naming what is missing or wrong
    (never a KeyError or TypeError from deep inside)."""
    from ..checkpoint import FORMAT, ModelCard

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"card file {p} does not exist")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"the card {p} is not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise ValueError(f"the card {p} must be a JSON object with the ModelCard fields")
    required = [f.name for f in dataclasses.fields(ModelCard)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in d]
    classes = d.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes):
        raise ValueError(f"the card {p}: 'classes' must be a non-empty list of "
                         '{"id": 0, "name": "...", "color": [r, g, b]}')
    for i, c in enumerate(classes or []):
        lacking = [k for k in ("id", "name", "color") if not isinstance(c, dict) or k not in c]
        if lacking:
            missing.append(f"classes[{i}].{'/'.join(lacking)}")
    if missing:
        raise ValueError(f"the card {p} lacks the field(s) {', '.join(missing)}: a card needs "
                         "'config' (the network's FCtLConfig, e.g. {\"num_classes\": 7}) and "
                         "'classes' (each with id, name and color); or take the card of an "
                         "existing checkpoint with --like model.safetensors")
    d.setdefault("format", FORMAT)
    try:
        return ModelCard.from_dict(d)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"the card {p} is invalid: {exc}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-pth", help="convert a PyTorch .pth state dict (loaded safely)")
    p.add_argument("pth", help="PyTorch file holding the network's state_dict")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--card", help="model card as JSON (ModelCard fields, config included)")
    p.add_argument("--like", help="take the card of this existing checkpoint")
    p.add_argument("--name", help="model name in the card")
    p.set_defaults(func=run_import)
