"""The model registry and the card's architecture: cards record ``arch`` and are built through
:func:`model_core.registry.create_model`; cards without it are FCtL; fields a version does not
know (a newer checkpoint in an older plugin) load with a warning naming them."""

from __future__ import annotations

import inspect
import json
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

from model_core import bench, checkpoint, info, registry
from model_core.checkpoint import (CheckpointError, ClassInfo, ModelCard, load_checkpoint,
                                   read_card, save_checkpoint)
from model_core.config import FCtLConfig

CFG = dict(backbone="mobilenetv3_small_050", num_classes=3, patch_size=64, decoder_channels=16)


def _card(config: FCtLConfig, **kw) -> ModelCard:
    return ModelCard(config, [ClassInfo(i, f"c{i}", (i, i, i)) for i in range(3)], **kw)


def _header_card(path: Path) -> dict:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["fctl"])


def _rewrite_card(src: Path, dst: Path, edit) -> Path:
    """A copy of ``src`` whose card is edited by ``edit(card_dict)``; weights untouched."""
    from safetensors.torch import load_file, save_file

    card = _header_card(src)
    edit(card)
    save_file(load_file(str(src)), str(dst), metadata={"fctl": json.dumps(card)})
    return dst


class TinyNet(nn.Module):
    """A registered stand-in architecture (one conv), taking an FCtLConfig."""

    def __init__(self, config: FCtLConfig) -> None:
        super().__init__()
        self.config = config
        self.head = nn.Conv2d(config.in_chans, config.num_classes, 1)


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register_model("tiny_test_arch")(TinyNet)
    return "tiny_test_arch"


@pytest.fixture(scope="module")
def fctl_checkpoint(tmp_path_factory) -> Path:
    cfg = FCtLConfig(**CFG)
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    return save_checkpoint(path, registry.create_model("fctl", cfg), _card(cfg))


def test_card_records_the_architecture(fctl_checkpoint):
    assert _header_card(fctl_checkpoint)["arch"] == "fctl"
    assert read_card(fctl_checkpoint).arch == "fctl"
    model, card = load_checkpoint(fctl_checkpoint)
    assert type(model).__name__ == "FCtL" and card.arch == "fctl"


def test_cards_without_arch_are_fctl(fctl_checkpoint, tmp_path):
    old = _rewrite_card(fctl_checkpoint, tmp_path / "old.safetensors",
                        lambda c: c.pop("arch"))
    assert "arch" not in _header_card(old)
    model, card = load_checkpoint(old)
    assert card.arch == "fctl" and type(model).__name__ == "FCtL"


def test_unknown_card_and_config_fields_load_with_a_warning(fctl_checkpoint, tmp_path, caplog):
    def newer(card):
        card["licence"] = "CC-BY"
        card["config"]["transformer_depth"] = 12

    path = _rewrite_card(fctl_checkpoint, tmp_path / "newer.safetensors", newer)
    with caplog.at_level("WARNING"):
        model, card = load_checkpoint(path)
    assert "licence" in caplog.text and "transformer_depth" in caplog.text
    assert card.config == FCtLConfig(**CFG) and not hasattr(card, "licence")
    assert isinstance(model, nn.Module)
    with caplog.at_level("WARNING"):
        assert FCtLConfig.from_dict({**FCtLConfig(**CFG).to_dict(), "x_new": 1}) == \
            FCtLConfig(**CFG)
    assert "x_new" in caplog.text


def test_recorded_arch_is_the_network_built(tiny_arch, tmp_path):
    cfg = FCtLConfig(**CFG)
    model = registry.create_model(tiny_arch, cfg)
    assert isinstance(model, TinyNet)
    path = save_checkpoint(tmp_path / "t.safetensors", model, _card(cfg, arch=tiny_arch))
    assert _header_card(path)["arch"] == tiny_arch
    loaded, card = load_checkpoint(path)
    assert isinstance(loaded, TinyNet) and card.arch == tiny_arch
    torch.testing.assert_close(loaded.head.weight, model.head.weight)
    assert tiny_arch in registry.list_models() and registry.is_model("fctl")
    assert info.describe(cfg, time_forward=False, arch=tiny_arch)["params"]


def test_unknown_architecture_is_a_clear_error(fctl_checkpoint, tmp_path):
    path = _rewrite_card(fctl_checkpoint, tmp_path / "alien.safetensors",
                         lambda c: c.update(arch="segformer_xyz"))
    with pytest.raises(CheckpointError, match="unknown model architecture 'segformer_xyz'.*fctl"):
        read_card(path)
    with pytest.raises(KeyError, match="segformer_xyz"):
        registry.create_model("segformer_xyz", FCtLConfig(**CFG))


def test_registering_another_class_under_a_taken_name_fails(tiny_arch):
    registry.register_model(tiny_arch)(TinyNet)          # the same class again: fine
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model(tiny_arch)(nn.Identity)


def test_loading_info_and_bench_build_through_the_registry():
    from model_core.bench import patches, rasters

    for modules in ((checkpoint,), (info,), (bench, patches, rasters)):
        src = "".join(inspect.getsource(m) for m in modules)
        assert "FCtL(" not in src and "create_model(" in src, modules[0].__name__
