"""One-file checkpoints: round trip, mismatch messages, safe .pth import, malicious pickles."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from model_core.checkpoint import (CheckpointError, ClassInfo, ModelCard, import_pth,
                                   load_checkpoint, load_pth_state, read_card, save_checkpoint)
from model_core.config import FCtLConfig
from model_core.models import FCtL

KW = dict(backbone="mobilenetv3_small_050", num_classes=3, patch_size=64, decoder_channels=16,
          input_mean=(0.5,) * 3, input_std=(0.25,) * 3)


def _card(config: FCtLConfig) -> ModelCard:
    return ModelCard(config, [ClassInfo(0, "void", (0, 0, 0)), ClassInfo(1, "a", (1, 2, 3)),
                              ClassInfo(2, "b", (4, 5, 6))], ignore_index=0, bands=[3, 2, 1],
                     scale=(0.0, 1000.0), gsd=0.3, name="t",
                     provenance={"epochs": 2, "val": {"miou": 0.5}})


def test_round_trip_keeps_weights_and_card(tmp_path):
    torch.manual_seed(0)
    config = FCtLConfig(**KW)
    model = FCtL(config).eval()
    path = save_checkpoint(tmp_path / "m.safetensors", model, _card(config))
    assert not (tmp_path / "m.safetensors.part").exists()
    loaded, card = load_checkpoint(path)
    assert card.config == config and card.bands == [3, 2, 1] and card.scale == (0.0, 1000.0)
    assert card.classes[1] == ClassInfo(1, "a", (1, 2, 3)) and card.provenance["epochs"] == 2
    assert read_card(path).gsd == 0.3
    x = torch.rand(1, 3, 64, 64)
    boxes = {"large": (0.25, 0.25, 0.5, 0.5)}
    with torch.no_grad():
        assert torch.allclose(model(x, x, x, boxes=boxes), loaded(x, x, x, boxes=boxes))


def test_metadata_that_does_not_match_the_weights_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    config = FCtLConfig(**KW)
    path = save_checkpoint(tmp_path / "m.safetensors", FCtL(config), _card(config))
    # Edit the header: say it is a 5-class network while the weights have 3 outputs.
    meta = json.loads(__import__("safetensors").safe_open(str(path), "pt").metadata()["fctl"])
    meta["config"]["num_classes"] = 5
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"),
              metadata={"fctl": json.dumps(meta)})
    with pytest.raises(CheckpointError, match="do not match.*another shape"):
        load_checkpoint(tmp_path / "bad.safetensors")


def test_pth_import_round_trip(tmp_path, capsys):
    from model_core.cli import main

    torch.manual_seed(1)
    config = FCtLConfig.baseline(**KW)
    model = FCtL(config).eval()
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}},
               tmp_path / "m.pth")
    out = import_pth(tmp_path / "m.pth", tmp_path / "m.safetensors", _card(config))
    loaded, card = load_checkpoint(out)
    assert card.provenance["imported_from"] == "m.pth"
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), loaded(x))
    # the same through the command line, taking the card of an existing checkpoint
    rc = main(["import-pth", str(tmp_path / "m.pth"), "--out", str(tmp_path / "c.safetensors"),
               "--like", str(out)])
    assert rc == 0 and (tmp_path / "c.safetensors").is_file()
    # weights of another network are refused before anything is written
    other = FCtL(FCtLConfig(**KW))
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="unexpected"):
        import_pth(tmp_path / "other.pth", tmp_path / "x.safetensors", _card(config))
    assert not (tmp_path / "x.safetensors").exists()


class _Exploit:
    """Unpickling this runs a shell command: the attack weights_only=True must stop."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Exploit(marker)}, bad)
    with pytest.raises(CheckpointError, match="refused"):
        load_pth_state(bad)
    assert not marker.exists()
    with open(tmp_path / "raw.pkl", "wb") as f:
        pickle.dump(_Exploit(marker), f)
    with open(tmp_path / "raw.pkl", "rb") as f:   # the file really is an exploit ...
        pickle.load(f)
    assert marker.exists()
    marker.unlink()                                 # ... that the import never runs
    with pytest.raises(CheckpointError, match="never executed"):
        import_pth(tmp_path / "raw.pkl", tmp_path / "o.safetensors",
                   _card(FCtLConfig.baseline(**KW)))
    assert not marker.exists() and not (tmp_path / "o.safetensors").exists()


def test_non_checkpoints_are_explained(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_card(tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_pth_state(tmp_path / "list.pth")
