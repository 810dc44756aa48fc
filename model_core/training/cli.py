"""Commands ``train``, ``evaluate``, ``compare`` and ``import-pth`` of ``python -m model_core``."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
from pathlib import Path

from ..config import FCtLConfig, ablation_configs
from .datasets import add_data_args, data_info, load_split
from .loop import TrainConfig

log = logging.getLogger(__name__)

# Inputs the EfficientNet-Lite0 ImageNet weights expect: TF-Lite's (x - 127) / 128, i.e. mean and
# std 0.5 on [0, 1]; timm's ImageNet statistics for any other backbone.
LITE0_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--config", default="fctl",
                   help="fctl (full model), fcn8s (baseline) or an ablation name "
                        f"({', '.join(sorted(ablation_configs()))})")
    g.add_argument("--config-json", help="a JSON file of FCtLConfig fields (overrides --config)")
    g.add_argument("--backbone", default="efficientnet_lite0", help="any timm backbone")
    g.add_argument("--patch-size", type=int, default=256,
                   help="local patch P in pixels (the paper: 508; 256 trains 4x faster on CPU)")
    g.add_argument("--medium-context", default="x3")
    g.add_argument("--large-context", default="global")
    g.add_argument("--decoder-channels", type=int, default=128,
                   help="width of the decoder head (128 keeps CPU inference fast)")


def build_config(args: argparse.Namespace, num_classes: int, in_chans: int) -> FCtLConfig:
    if args.config_json:
        d = json.loads(Path(args.config_json).read_text())
        d.setdefault("num_classes", num_classes)
        d.setdefault("in_chans", in_chans)
        return FCtLConfig.from_dict(d)
    mean, std = LITE0_MEAN_STD if args.backbone == "efficientnet_lite0" else IMAGENET_MEAN_STD
    if in_chans != 3:   # no pretrained statistics for other band counts: centre [0, 1]
        mean, std = (0.5,) * in_chans, (0.25,) * in_chans
    base = FCtLConfig(backbone=args.backbone, num_classes=num_classes, in_chans=in_chans,
                      patch_size=args.patch_size, medium_context=args.medium_context,
                      large_context=args.large_context, decoder_channels=args.decoder_channels,
                      input_mean=mean, input_std=std)
    if args.config == "fctl":
        return base
    configs = ablation_configs(base)
    if args.config not in configs:
        raise ValueError(f"unknown --config {args.config!r}; choose fctl or one of "
                         f"{sorted(configs)}")
    return configs[args.config]


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training (defaults: the paper's recipe)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch,
                   help="mini-batches of random patches per epoch")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--accumulate", type=int, default=d.accumulate,
                   help="mini-batches per optimizer step (effective batch = batch x accumulate)")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate (poly decay 0.9)")
    g.add_argument("--focal-gamma", type=float, default=d.focal_gamma)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--pretrained", default="imagenet",
                   help="imagenet (EfficientNet-Lite0 package), none, or a weights file")
    g.add_argument("--init-from", metavar="CHECKPOINT",
                   help="initialise the network from this FCtL checkpoint (tensors matched by "
                        "name and shape; the rest keep their initialisation)")
    g.add_argument("--no-augment", action="store_true", help="no flips / 90-degree rotations")
    g.add_argument("--threads", type=int, help="CPU threads for torch")


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                       batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr,
                       focal_gamma=args.focal_gamma, seed=args.seed, device=args.device,
                       amp=not args.no_amp, pretrained=args.pretrained,
                       augment=not args.no_augment, threads=args.threads,
                       init_from=args.init_from)


def run_train(args: argparse.Namespace) -> int:
    from .loop import train

    train_images = load_split(args, "train")
    if not train_images:
        raise ValueError("no training images: give --train-ids (or --image/--labels)")
    val_images = load_split(args, "val")
    info = data_info(args, train_images)
    num_classes = max(c[0] for c in info.classes) + 1
    config = build_config(args, num_classes, train_images[0].image.shape[0])
    command = "python -m model_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    info.provenance.update({"command": command, "data": {"layout": args.layout,
                                                         "root": args.root}})
    if args.name:
        info.name = args.name
    summary = train(config, train_images, val_images, info, args.out, train_config(args),
                    resume=args.resume)
    if args.export:
        shutil.copyfile(summary["best"], args.export)
        summary["exported"] = args.export
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train an FCtL model (or a baseline/ablation)",
                       description="Train with the paper's recipe; writes best.safetensors, "
                                   "last.safetensors, log.csv and log.png to --out.")
    add_data_args(p)
    add_model_args(p)
    add_train_args(p)
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--name", help="model name in the card")
    p.add_argument("--export", help="copy the best checkpoint to this path at the end")
    p.set_defaults(func=run_train)

    for mod in ("evaluate", "compare", "importer"):
        try:
            m = __import__(f"{__package__}.{mod}", fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(mod):
                continue
            raise
        m.add_parser(sub)
