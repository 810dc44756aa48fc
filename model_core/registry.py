"""Model registry, in the spirit of timm's: architectures by name.

A checkpoint's card records its architecture (``arch``; cards without one are ``"fctl"``), and
:func:`create_model` builds the network for it, so loading, ``info`` and ``bench`` never name a
class. Reading a card needs only :func:`config_class`, which imports no network (nor timm).
A new architecture registers itself::

    @register_model("my_arch", config=MyConfig)
    class MyNet(nn.Module):
        def __init__(self, config: MyConfig) -> None: ...

and its cards then load through :func:`model_core.checkpoint.load_checkpoint`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .config import FCtLConfig

if TYPE_CHECKING:
    from torch import nn

DEFAULT_ARCH = "fctl"   # what cards written before ``arch`` existed hold


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[[Any], "nn.Module"]
    config: type          # the config class of its cards (``from_dict`` / ``to_dict``)


_REGISTRY: dict[str, ModelEntry] = {}
# Built-in architectures: imported on first use (the network modules import timm).
# (module relative to this package: the engine is also shipped as fctl_qgis.model_core)
_BUILTIN = {"fctl": (".models.fctl", "FCtL", FCtLConfig)}


def register_model(name: str, config: type = FCtLConfig) -> Callable:
    """Decorator registering a network class (or factory taking the config) under ``name``."""
    def wrap(build: Callable[[Any], "nn.Module"]) -> Callable[[Any], "nn.Module"]:
        old = _REGISTRY.get(name)
        if old is not None and old.build is not build:
            raise ValueError(f"model architecture {name!r} is already registered "
                             f"({getattr(old.build, '__qualname__', old.build)})")
        _REGISTRY[name] = ModelEntry(name, build, config)
        return build
    return wrap


def _entry(arch: str) -> ModelEntry:
    if arch not in _REGISTRY and arch in _BUILTIN:
        module, attr, config = _BUILTIN[arch]
        build = getattr(importlib.import_module(module, __package__), attr)
        if arch not in _REGISTRY:   # the module may have registered itself on import
            register_model(arch, config)(build)
    if arch not in _REGISTRY:
        raise KeyError(f"unknown model architecture {arch!r}: this version knows "
                       f"{list_models()}; a newer version of the plugin may read it")
    return _REGISTRY[arch]


def list_models() -> list[str]:
    """Names of the known architectures."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def is_model(arch: str) -> bool:
    return arch in _REGISTRY or arch in _BUILTIN


def config_class(arch: str) -> type:
    """The config class of ``arch``'s cards, without importing its network."""
    if arch in _REGISTRY:
        return _REGISTRY[arch].config
    if arch in _BUILTIN:
        return _BUILTIN[arch][2]
    return _entry(arch).config   # raises the unknown-architecture error


def create_model(arch: str, config: Any) -> "nn.Module":
    """The network of architecture ``arch`` built from ``config`` (random weights)."""
    entry = _entry(arch)
    if not isinstance(config, entry.config):
        raise TypeError(f"architecture {arch!r} takes a {entry.config.__name__}, got "
                        f"{type(config).__name__}")
    return entry.build(config)
