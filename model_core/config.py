"""Configuration dataclasses of the FCtL network.

One :class:`FCtLConfig` describes one network. Every ablation of the paper's Tables 4, 6 and 7
is a value of it (see :func:`ablation_configs`), and the FCN-8s baseline is
:meth:`FCtLConfig.baseline`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger(__name__)

CONTEXT_NAMES = ("local", "medium", "large")
FUSIONS = ("average", "weighted", "adaptive")
ALE_MODES = ("off", "concat", "a", "b", "c", "d", "e")
# How LCF's output joins X_I (Sec. 3.5): "projection" = a zero-initialised 1x1 conv (starts from
# the baseline, learns at the speed of any conv), "none" = the paper's plain sum, "gamma" = the
# conference code's scalar initialised to 0 (kept to load older checkpoints).
LCF_OUTPUTS = ("projection", "none", "gamma")
# Scale of the content scores X_I (x) X_U of Eq. 1: "sqrt" = 1/sqrt(d), "none" = the paper's.
ATTENTION_SCALES = ("sqrt", "none")
# Activation of E in Eq. 6: "sigmoid" bounds the spatial attention, "none" = the paper's.
LFI_ACTIVATIONS = ("sigmoid", "none")
# Fields added after the first release, with the value that reproduces older checkpoints.
LEGACY_DEFAULTS = {"lcf_output": "gamma", "attention_scale": "sqrt", "lfi_activation": "sigmoid"}

# ALE variants of Fig. 13: (number of mutual-enhancement rounds before the final LFI, refs jointly).
ALE_ORDER = {"a": 0, "b": 1, "c": 0, "d": 1, "e": 2}


def parse_context_size(spec: str, patch_size: int, raster_size: tuple[int, int] | None = None
                       ) -> tuple[float, float]:
    """Window size (width, height) in raster pixels of a context spec (Sec. 3.2).

    ``"x3"`` is a multiple of the patch (lambda = 3), ``"1524"`` a size in pixels, ``"global"``
    the whole raster (which needs ``raster_size``).
    """
    spec = str(spec).strip().lower()
    if spec == "global":
        if raster_size is None:
            raise ValueError("the global context needs the raster size")
        return float(raster_size[0]), float(raster_size[1])
    if spec.startswith("x"):
        lam = float(spec[1:])
        if lam < 1:
            raise ValueError(f"context multiple must be >= 1, got {spec!r}")
        return lam * patch_size, lam * patch_size
    px = float(spec)
    if px < patch_size:
        raise ValueError(f"context of {px:g} px is smaller than the {patch_size} px patch")
    return px, px


@dataclass
class FCtLConfig:
    """Architecture of an FCtL network (Sec. 3) or of its FCN-8s baseline.

    Attributes:
        backbone: any timm model giving features at strides 8, 16 and 32.
        num_classes: output classes (the ignore class included when it is a label value).
        patch_size: side of the local patch I in pixels (508 in the paper).
        medium_context / large_context: window of M and L, see :func:`parse_context_size`.
        lcf_contexts: contexts correlated with the local features by LCC (Table 4); empty = no LCF.
        positional: gated relative positional embeddings in LCC (Eq. 2) or plain Eq. 1.
        fusion: how MCF merges the locality-aware features (Table 6).
        ale: ALE structure (Table 7 / Fig. 13): off, concat, or variant a-e.
        ale_refs: references of ALE; variants a and b take one of them.
        lfi_kernels: window sizes of the channel groups of GroupDepthConv (Eq. 6).
        key_channels: channels of LCC's query/key projections (None = encoder channels).
        heads: attention heads of LCC (each with its own W_r and gate z).
        mcf_reduction: squeeze ratio of MCF's squeeze-and-split (Eq. 3).
        decoder_channels: width of the decoder's 3x3 head before scoring.
        input_mean / input_std: normalisation applied inside the network to inputs in [0, 1].
        lcf_output: how LCF's output joins X_I, see ``LCF_OUTPUTS``.
        attention_scale: scale of the content scores of Eq. 1, see ``ATTENTION_SCALES``.
        lfi_activation: activation of E in Eq. 6, see ``LFI_ACTIVATIONS``.
    """

    backbone: str = "vgg16"
    num_classes: int = 7
    in_chans: int = 3
    patch_size: int = 508
    medium_context: str = "x3"
    large_context: str = "global"
    lcf_contexts: tuple[str, ...] = ("local", "medium", "large")
    positional: bool = True
    fusion: str = "adaptive"
    ale: str = "d"
    ale_refs: tuple[str, ...] = ("medium", "large")
    lfi_kernels: tuple[int, ...] = (3, 5, 7, 9)
    key_channels: int | None = None
    heads: int = 1
    mcf_reduction: int = 4
    decoder_channels: int = 256
    input_mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    input_std: tuple[float, ...] = (1.0, 1.0, 1.0)
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    lcf_output: str = "projection"
    attention_scale: str = "sqrt"
    lfi_activation: str = "sigmoid"

    def __post_init__(self) -> None:
        self.lcf_contexts = tuple(self.lcf_contexts)
        self.ale_refs = tuple(self.ale_refs)
        self.lfi_kernels = tuple(int(k) for k in self.lfi_kernels)
        self.input_mean = tuple(float(v) for v in self.input_mean)
        self.input_std = tuple(float(v) for v in self.input_std)
        self.validate()

    def validate(self) -> None:
        bad = [c for c in self.lcf_contexts if c not in CONTEXT_NAMES]
        if bad:
            raise ValueError(f"unknown LCF context(s) {bad}; choose from {CONTEXT_NAMES}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from {FUSIONS}")
        for name, allowed in (("lcf_output", LCF_OUTPUTS), ("attention_scale", ATTENTION_SCALES),
                              ("lfi_activation", LFI_ACTIVATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose from {allowed}")
        if self.ale not in ALE_MODES:
            raise ValueError(f"unknown ALE structure {self.ale!r}; choose from {ALE_MODES}")
        refs = [r for r in self.ale_refs if r not in ("medium", "large")]
        if refs:
            raise ValueError(f"ALE references must be 'medium' and/or 'large', got {refs}")
        if self.ale in ("a", "b") and len(self.ale_refs) != 1:
            raise ValueError(f"ALE variant ({self.ale}) takes one reference, got {self.ale_refs}")
        if self.ale in ("c", "d", "e", "concat") and len(self.ale_refs) != 2:
            raise ValueError(f"ALE structure {self.ale!r} takes both references, got {self.ale_refs}")
        if any(k < 1 or k % 2 == 0 for k in self.lfi_kernels):
            raise ValueError(f"LFI kernel sizes must be odd and positive, got {self.lfi_kernels}")
        if self.num_classes < 2:
            raise ValueError("num_classes must be at least 2")
        if len(self.input_mean) != self.in_chans or len(self.input_std) != self.in_chans:
            raise ValueError("input_mean and input_std need one value per input channel")
        for name in ("medium_context", "large_context"):
            spec = getattr(self, name)
            if spec != "global":
                parse_context_size(spec, self.patch_size)

    # ------------------------------------------------------------------ derived
    @property
    def uses_lcf(self) -> bool:
        return len(self.lcf_contexts) > 0

    @property
    def uses_ale(self) -> bool:
        return self.ale != "off"

    @property
    def context_streams(self) -> tuple[str, ...]:
        """Context streams (besides the local patch) that the encoder must see."""
        need = set(c for c in self.lcf_contexts if c != "local")
        if self.uses_ale:
            need.update(self.ale_refs)
        return tuple(c for c in ("medium", "large") if c in need)

    @property
    def is_baseline(self) -> bool:
        return not self.uses_lcf and not self.uses_ale

    def context_spec(self, name: str) -> str:
        return {"medium": self.medium_context, "large": self.large_context}[name]

    # ------------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FCtLConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        # a newer version's fields (a newer checkpoint in an older plugin): dropped, named
        if unknown:
            log.warning("FCtL config field(s) %s unknown to this version: ignored (written by a "
                        "newer version?)", unknown)
        d = {k: v for k, v in d.items() if k in known}
        for name, value in LEGACY_DEFAULTS.items():   # written before the field existed
            d.setdefault(name, value)
        return cls(**d)

    def replace(self, **changes: Any) -> "FCtLConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def baseline(cls, **kw: Any) -> "FCtLConfig":
        """FCN-8s baseline: same backbone and decoder, no contexts (first row of Table 4)."""
        kw.setdefault("lcf_contexts", ())
        kw.setdefault("ale", "off")
        return cls(**kw)


def ablation_configs(base: FCtLConfig | None = None) -> dict[str, FCtLConfig]:
    """Every ablation of Tables 4, 6 and 7 as a named config derived from ``base``."""
    b = base or FCtLConfig()
    no_ale = dict(ale="off")
    out: dict[str, FCtLConfig] = {
        "fcn8s": FCtLConfig.baseline(**_shared(b)),
        # Table 4: contexts and GPE, ALE excluded.
        "t4_local": b.replace(lcf_contexts=("local",), positional=False, **no_ale),
        "t4_medium": b.replace(lcf_contexts=("medium",), positional=False, **no_ale),
        "t4_large": b.replace(lcf_contexts=("large",), positional=False, **no_ale),
        "t4_medium_large": b.replace(lcf_contexts=("medium", "large"), positional=False, **no_ale),
        "t4_all": b.replace(lcf_contexts=CONTEXT_NAMES, positional=False, **no_ale),
        # Row 7 marks GPE and no context: GPE needs a context to attend to, so we read it as the
        # local self-correlation with GPE (row 2 plus GPE).
        "t4_gpe": b.replace(lcf_contexts=("local",), positional=True, **no_ale),
        "t4_medium_large_gpe": b.replace(lcf_contexts=("medium", "large"), positional=True, **no_ale),
        "t4_all_gpe": b.replace(lcf_contexts=CONTEXT_NAMES, positional=True, **no_ale),
        # Table 6: fusion schemes.
        "t6_average": b.replace(fusion="average", **no_ale),
        "t6_weighted": b.replace(fusion="weighted", **no_ale),
        "t6_adaptive": b.replace(fusion="adaptive", **no_ale),
        # Table 7: ALE structures.
        "t7_concat": b.replace(ale="concat", ale_refs=("medium", "large")),
        "t7_ale_only": b.replace(lcf_contexts=(), ale="d", ale_refs=("medium", "large")),
    }
    for variant in ("a", "b"):
        for ref in ("medium", "large"):
            out[f"t7_{variant}_{ref}"] = b.replace(ale=variant, ale_refs=(ref,))
    for variant in ("c", "d", "e"):
        out[f"t7_{variant}"] = b.replace(ale=variant, ale_refs=("medium", "large"))
    return out


def _shared(b: FCtLConfig) -> dict[str, Any]:
    keep = ("backbone", "num_classes", "in_chans", "patch_size", "decoder_channels",
            "input_mean", "input_std", "backbone_kwargs", "medium_context", "large_context",
            "lfi_activation", "attention_scale", "lcf_output")
    return {k: getattr(b, k) for k in keep}
