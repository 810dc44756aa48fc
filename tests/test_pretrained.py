"""Backbone initialisation from local weights files through timm's own loading (no download),
and network initialisation from an FCtL checkpoint (--init-from)."""

from __future__ import annotations

import pytest
import torch

from model_core.checkpoint import ClassInfo, ModelCard, save_checkpoint
from model_core.config import FCtLConfig
from model_core.models import FCtL
from model_core.models.backbone import Encoder, load_backbone_weights
from model_core.training.pretrained import init_from_checkpoint, init_pretrained


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory):
    """A VGG16 state dict in torchvision's key names and one in timm's, distinct random weights."""
    import timm
    import torchvision

    d = tmp_path_factory.mktemp("vgg")
    torch.manual_seed(1)
    tv = torchvision.models.vgg16().state_dict()
    torch.save(tv, d / "tv.pth")
    torch.manual_seed(2)
    tm = timm.create_model("vgg16").state_dict()
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tm.items()}, str(d / "timm.safetensors"))
    partial = {k: v for k, v in tv.items() if not k.startswith("features.28")}
    torch.save({"state_dict": partial}, d / "partial.pth")
    return d, tv, tm


def test_vgg16_torchvision_and_timm_names(vgg_files):
    d, tv, tm = vgg_files
    enc = Encoder("vgg16")
    assert load_backbone_weights(enc, d / "tv.pth") == len(enc.body.state_dict())
    own = enc.body.state_dict()
    assert torch.equal(own["features_0.weight"], tv["features.0.weight"])
    assert torch.equal(own["features_28.weight"], tv["features.28.weight"])
    load_backbone_weights(enc, d / "timm.safetensors")
    assert torch.equal(enc.body.state_dict()["features_28.bias"], tm["features.28.bias"])


def test_partial_file_is_an_error_naming_what_is_missing(vgg_files):
    d, _, _ = vgg_files
    with pytest.raises(ValueError, match=r"2 of the encoder's 26 tensors missing.*features_28"):
        load_backbone_weights(Encoder("vgg16"), d / "partial.pth")


def test_another_models_file_is_an_error(tmp_path):
    import timm

    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="does not fit the 'vgg16' encoder"):
        load_backbone_weights(Encoder("vgg16"), tmp_path / "r18.pth")


def test_extra_bands_adapt_the_first_conv(vgg_files, caplog):
    d, tv, _ = vgg_files
    cfg = FCtLConfig(backbone="vgg16", in_chans=4, input_mean=(0.5,) * 4, input_std=(0.25,) * 4,
                     patch_size=64, decoder_channels=16)
    model = FCtL(cfg)
    with caplog.at_level("WARNING"):
        n = init_pretrained(model, str(d / "tv.pth"))
    assert n == 26 and "adapted from 3 to 4 bands" in caplog.text
    w = model.encoder.body.state_dict()["features_0.weight"]
    assert w.shape == (64, 4, 3, 3)
    assert torch.equal(model.encoder.body.state_dict()["features_2.weight"], tv["features.2.weight"])


def test_init_from_checkpoint_keeps_what_fits(tmp_path):
    torch.manual_seed(0)
    tiny = dict(backbone="mobilenetv3_small_050", patch_size=64, decoder_channels=16,
                key_channels=32)
    old_cfg = FCtLConfig(**tiny, lcf_output="gamma")
    old = FCtL(old_cfg)
    card = ModelCard(config=old_cfg, classes=[ClassInfo(i, f"c{i}", (i, i, i)) for i in range(7)],
                     ignore_index=0)
    path = save_checkpoint(tmp_path / "old.safetensors", old, card)
    new = FCtL(FCtLConfig(**tiny))
    report = init_from_checkpoint(new, path)
    assert report["kept_initialisation"] == ["lcf.proj.bias", "lcf.proj.weight"]
    assert report["unused"] == ["lcf.gamma"]
    for k, v in old.state_dict().items():
        if k != "lcf.gamma":
            assert torch.equal(new.state_dict()[k], v), k
    assert new.lcf.proj.weight.abs().sum() == 0       # LCF starts from the old model's output
    other = FCtL(FCtLConfig(backbone="resnet18", patch_size=64, decoder_channels=16))
    with pytest.raises(ValueError, match="does not fit this network"):
        init_from_checkpoint(other, path)
