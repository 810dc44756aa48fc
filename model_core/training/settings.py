"""What a training run is told: how to train (:class:`TrainConfig`) and what the data is
(:class:`DataInfo`). Torch-free, so the command line builds its parser without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """How to train. The optimiser is the paper's (Adam, poly decay 0.9, focal gamma 3); the
    named budgets and their learning rates are the command line's ``--recipe`` (quick, paper).

    ``steps_per_epoch`` counts mini-batches of ``batch_size`` random patches; the optimizer steps
    every ``accumulate`` mini-batches (effective batch = batch_size x accumulate).
    """

    epochs: int = 10
    steps_per_epoch: int = 100
    batch_size: int = 4
    accumulate: int = 2
    lr: float = 5e-5
    poly_power: float = 0.9
    focal_gamma: float = 3.0
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    pretrained: str | None = "imagenet"
    augment: bool = True
    val_batch_size: int = 4
    threads: int | None = None
    # Validation runs the streaming engine in the mode users run (shared medium context).
    val_shared_context: bool = True
    # An FCtL checkpoint whose tensors initialise the network (matched by name and shape).
    init_from: str | None = None
    # Coarser-capture views (factors > 1) and how often a sample comes from one: teaches the
    # model imagery coarser than its pixel size, as the engine enlarges it.
    coarser: tuple[float, ...] = ()
    coarser_prob: float = 0.5
    # Validate the starting weights too, so that they are kept when no epoch beats them.
    validate_start: bool = False


@dataclass
class DataInfo:
    """What the card records about the data: classes, ignore class, bands, scaling, GSD."""

    classes: list[tuple[int, str, tuple[int, int, int]]]
    ignore_index: int | None
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])
    scale: tuple[float, float] = (0.0, 255.0)
    gsd: float | None = None
    name: str = "FCtL model"
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
