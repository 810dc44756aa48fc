"""One-file checkpoints: safetensors weights with the model card as JSON in the header.

The card (:class:`ModelCard`) carries everything inference needs besides the weights: the
architecture (``arch``, built through :mod:`.registry`) and its config, classes (ids, names,
colours), ignore index, input bands and scaling, patch and context sizes (in the config), the
ground sample distance and the provenance. Loading checks that weights and config match and says
what does not. Fields this version does not know (a card written by a newer version) are dropped
with a warning naming them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import FCtLConfig
from .registry import DEFAULT_ARCH, config_class, create_model

log = logging.getLogger(__name__)

FORMAT = "fctl-checkpoint/1"
METADATA_KEY = "fctl"
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "resources" / "models" / "default.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the problem and the remedy."""


@dataclass
class ClassInfo:
    id: int
    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        self.color = tuple(int(c) for c in self.color)  # type: ignore[assignment]


@dataclass
class ModelCard:
    """Metadata of a trained model.

    ``bands`` are the 1-based raster bands fed to the network, in order; ``scale`` maps raw
    values to the network's [0, 1] input as (raw - lo) / (hi - lo), clipped. ``arch`` names the
    network in the model registry (:func:`model_core.registry.create_model`); ``config`` is that
    architecture's config.
    """

    config: FCtLConfig
    classes: list[ClassInfo]
    ignore_index: int | None = None
    bands: list[int] = field(default_factory=lambda: [1, 2, 3])
    scale: tuple[float, float] = (0.0, 255.0)
    gsd: float | None = None
    name: str = "FCtL model"
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    arch: str = DEFAULT_ARCH

    def __post_init__(self) -> None:
        self.classes = [c if isinstance(c, ClassInfo) else ClassInfo(**c) for c in self.classes]
        self.scale = (float(self.scale[0]), float(self.scale[1]))
        if self.scale[1] <= self.scale[0]:
            raise CheckpointError(f"input scaling {self.scale} is empty: hi must exceed lo")
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise CheckpointError(f"class ids are not unique: {ids}")
        if any(i < 0 or i >= self.config.num_classes for i in ids):
            raise CheckpointError(f"class ids {ids} do not fit a {self.config.num_classes}-class "
                                  "network")
        if len(self.bands) != self.config.in_chans:
            raise CheckpointError(f"{len(self.bands)} input bands given for a network of "
                                  f"{self.config.in_chans} input channels")

    def class_by_id(self) -> dict[int, ClassInfo]:
        return {c.id: c for c in self.classes}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["config"] = self.config.to_dict()
        d["format"] = FORMAT
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCard":
        d = dict(d)
        fmt = d.pop("format", None)
        if fmt != FORMAT:
            raise CheckpointError(f"unsupported checkpoint format {fmt!r} (this version reads "
                                  f"{FORMAT!r})")
        d["arch"] = arch = d.get("arch") or DEFAULT_ARCH   # cards before arch: FCtL
        try:
            config_cls = config_class(arch)
        except KeyError as exc:
            raise CheckpointError(exc.args[0]) from None
        d["config"] = config_cls.from_dict(d["config"])
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:   # written by a newer version: what this one knows is enough to run it
            log.warning("model card field(s) %s unknown to this version: ignored", extra)
            for name in extra:
                del d[name]
        return cls(**d)


def save_checkpoint(path: str | Path, model: torch.nn.Module, card: ModelCard) -> Path:
    """Write weights and card to ``path`` atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".part")
    try:
        save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(card.to_dict())})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors creates 0600 files; a model is shareable
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_card(path: str | Path) -> ModelCard:
    """The model card of a checkpoint, without loading its weights."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({exc}); "
                              "re-export the model with `python -m model_core train`") from exc
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path} has no FCtL model card in its header: it is not an FCtL "
                              "checkpoint (import PyTorch files with `model_core import-pth`)")
    try:
        return ModelCard.from_dict(json.loads(meta[METADATA_KEY]))
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"the model card of {path} is invalid: {exc}") from exc


def load_checkpoint(path: str | Path | None = None, device: str | torch.device = "cpu"
                    ) -> tuple[torch.nn.Module, ModelCard]:
    """Build the network its card describes and load its weights (``None`` = bundled default)."""
    from safetensors.torch import load_file

    path = DEFAULT_MODEL if path is None else path
    card = read_card(path)
    try:
        model = create_model(card.arch, card.config)
    except Exception as exc:
        raise CheckpointError(f"cannot build the network described by {path}: {exc}") from exc
    state = load_file(str(path))
    check_state(model, state, str(path))
    model.load_state_dict(state)
    return model.to(device).eval(), card


def check_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise a :class:`CheckpointError` listing missing, unexpected and mis-shaped tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: file "
                         f"{tuple(state[k].shape)} vs network {tuple(own[k].shape)})")
        raise CheckpointError(f"the weights in {source} do not match the network its metadata "
                              f"describes: {'; '.join(parts)}. The file is corrupt or its "
                              "metadata was edited; retrain or re-export it.")


def _existing(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model file {p} does not exist; give an existing .safetensors "
                              "checkpoint or leave the model empty for the bundled default")
    return p


def load_pth_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a PyTorch ``.pth``/``.pt`` file, never unpickling arbitrary code.

    ``torch.load(..., weights_only=True)`` only rebuilds tensors and plain containers; a pickle
    that would import or call anything else is refused with a :class:`CheckpointError`. Common
    wrappers (``{"state_dict": ...}``, ``{"model": ...}``) and DataParallel's ``module.`` prefix
    are unwrapped.
    """
    import pickle

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"PyTorch file {p} does not exist")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"refused to load {p}: it is not a plain tensor file that loads "
                              f"safely with weights_only=True ({str(exc).splitlines()[0]}). "
                              "Files that need arbitrary code to unpickle are never executed; "
                              "re-save the model's state_dict() only") from exc
    for key in ("state_dict", "model", "model_state_dict", "weights"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or \
            not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{p} holds no state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {str(k): v for k, v in obj.items()}


def import_pth(path: str | Path, out: str | Path, card: ModelCard) -> Path:
    """Convert a PyTorch state dict of the network ``card`` describes into a one-file
    safetensors checkpoint (weights checked against the card's config before writing)."""
    state = load_pth_state(path)
    model = create_model(card.arch, card.config)
    check_state(model, state, str(path))
    model.load_state_dict(state)
    card.provenance = {**card.provenance, "imported_from": Path(path).name}
    return save_checkpoint(out, model, card)
