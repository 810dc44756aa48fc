"""The FCtL network of Sec. 3: shapes, every ablation config, LCC/MCF/ALE properties, I/O."""

from __future__ import annotations

import pytest
import torch

from model_core.checkpoint import ClassInfo, ModelCard, load_checkpoint, save_checkpoint
from model_core.config import FCtLConfig, ablation_configs
from model_core.losses import FocalLoss
from model_core.models import ALE, LCC, LFI, MCF, FCtL, axis_offsets, crop_to_patch

TINY = dict(backbone="mobilenetv3_small_050", patch_size=64, decoder_channels=16,
            key_channels=32, heads=1)


def _inputs(cfg: FCtLConfig, b: int = 2, size: int | None = None):
    s = size or cfg.patch_size
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, cfg.in_chans, s, s, generator=g)
    return x, {n: torch.rand(b, cfg.in_chans, s, s, generator=g) for n in cfg.context_streams}


def _boxes(cfg: FCtLConfig):
    return {n: (0.25, 0.3, 0.5, 0.55) for n in cfg.context_streams
            if cfg.context_spec(n) == "global"}


@pytest.mark.parametrize("backbone,size", [("vgg16", 508), ("vgg16", 193), ("pvt_v2_b2", 508),
                                           ("pvt_v2_b2", 223)])
def test_output_shape_real_backbones(backbone, size):
    torch.manual_seed(0)
    cfg = FCtLConfig(backbone=backbone, patch_size=508, num_classes=7)
    model = FCtL(cfg).eval()
    x, ctx = _inputs(cfg, b=1, size=size)
    with torch.inference_mode():
        y = model(x, **ctx, boxes=_boxes(cfg))
    assert y.shape == (1, 7, size, size)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [64, 77, 101])
def test_output_shape_odd_sizes_tiny(size):
    cfg = FCtLConfig(**TINY)
    model = FCtL(cfg).eval()
    x, ctx = _inputs(cfg, b=2, size=size)
    with torch.inference_mode():
        assert model(x, **ctx, boxes=_boxes(cfg)).shape == (2, cfg.num_classes, size, size)


@pytest.mark.parametrize("name", sorted(ablation_configs(FCtLConfig(**TINY))))
def test_every_ablation_forward_backward(name):
    torch.manual_seed(0)
    cfg = ablation_configs(FCtLConfig(**TINY))[name]
    model = FCtL(cfg).train()
    x, ctx = _inputs(cfg)
    y = model(x, **ctx, boxes=_boxes(cfg))
    target = torch.randint(0, cfg.num_classes, (2, cfg.patch_size, cfg.patch_size))
    loss = FocalLoss(gamma=3.0, ignore_index=0)(y, target)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter takes part in the graph"
    assert model.encoder.body.conv_stem.weight.grad.abs().sum() > 0
    if cfg.uses_lcf:
        assert model.lcf.proj.weight.grad.abs().sum() > 0  # LCF is live (zero-init projection)
        assert set(model.lcf.lcc) == set(cfg.lcf_contexts)
        assert all(hasattr(m, "w_r") == cfg.positional for m in model.lcf.lcc.values())
    assert (model.lcf is None) == (not cfg.uses_lcf)
    assert (model.ale is None) == (not cfg.uses_ale)


def test_ablation_table_structure():
    cfgs = ablation_configs(FCtLConfig(**TINY))
    assert cfgs["fcn8s"].context_streams == ()
    assert cfgs["t4_local"].context_streams == ()
    assert cfgs["t4_medium"].context_streams == ("medium",)
    assert cfgs["t7_ale_only"].lcf_contexts == () and cfgs["t7_ale_only"].ale == "d"
    # LFI blocks per ALE structure of Fig. 13: (a) 1, (b) 3, (c) 1, (d) 4 as Alg. 1, (e) 7.
    expected = {"t7_a_medium": 1, "t7_b_large": 3, "t7_c": 1, "t7_d": 4, "t7_e": 7}
    for name, n in expected.items():
        model = FCtL(cfgs[name])
        assert sum(isinstance(m, LFI) for m in model.modules()) == n, name
    fusions = {cfgs[k].fusion for k in ("t6_average", "t6_weighted", "t6_adaptive")}
    assert fusions == {"average", "weighted", "adaptive"}


def test_baseline_has_no_context_parameters():
    cfg = FCtLConfig.baseline(**TINY)
    model = FCtL(cfg)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if n.startswith(("lcf", "ale"))]
    assert {n.split(".")[0] for n in names} == {"encoder", "decoder"}
    full = FCtL(FCtLConfig(**TINY))
    assert sum(p.numel() for p in full.parameters()) > sum(p.numel() for p in model.parameters())
    # The baseline needs no context input at all.
    with torch.inference_mode():
        assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 7, 64, 64)


def test_missing_context_is_a_clear_error():
    model = FCtL(FCtLConfig(**TINY)).eval()
    with pytest.raises(ValueError, match="needs the medium context"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="whole raster"):
        model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))


def test_mcf_weights_sum_to_one():
    torch.manual_seed(0)
    feats = [torch.randn(2, 24, 5, 7) for _ in range(3)]
    for fusion in ("adaptive", "weighted", "average"):
        mcf = MCF(24, 3, fusion)
        if fusion == "weighted":
            torch.nn.init.normal_(mcf.logits)
        h = mcf.weights(feats).expand(2, 3, 24, 5, 7)
        torch.testing.assert_close(h.sum(1), torch.ones(2, 24, 5, 7))
        assert (h > 0).all()
        out = mcf(feats)
        torch.testing.assert_close(out, (h * torch.stack(feats, 1)).sum(1))
    assert not torch.allclose(MCF(24, 3, "adaptive").weights(feats)[:, 0],
                              torch.full((2, 24, 5, 7), 1 / 3))  # adaptive weights vary


def test_positional_attention_rows_sum_to_one_and_translation_equivariant():
    lcc = LCC(16, heads=2, positional=True)
    with torch.no_grad():
        lcc.w_r.copy_(torch.tensor([[0.3, -0.2, -1.0], [0.0, 0.0, -0.7]]))
    h = w = 12
    p = lcc.positional_attention((h, w), (h, w))  # (heads, N, N)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, h * w))
    p = p.view(2, h, w, h, w)
    # Away from borders, shifting the query shifts its attention map by the same amount.
    for (qy, qx), (sy, sx) in [((5, 5), (1, 0)), ((5, 5), (0, 1)), ((4, 6), (1, -1))]:
        a = p[:, qy, qx, 1:-1, 1:-1]
        b = p[:, qy + sy, qx + sx]
        b = b[:, 1 + sy: h - 1 + sy, 1 + sx: w - 1 + sx]
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    # Context placement: with the patch in the centre third of a context, the local query at the
    # patch centre sits on the context's centre cell.
    d = axis_offsets(9, 9, torch.tensor([1 / 3]), torch.tensor([2 / 3]))[0]
    assert d[4, 4] == 0 and d[4, 5] == 1.0
    assert d[0, 3] == pytest.approx(1 / 3)   # query cells are a third of a key cell here


def _eq2_positional(w_r: torch.Tensor, q_size, k_size, box) -> torch.Tensor:
    """softmax(r W_r) written out as in Eq. 2: r = (dx, dy, dx^2 + dy^2) for every pair of a
    query cell (mapped into the context grid by the patch's box) and a key cell."""
    (hq, wq), (hk, wk) = q_size, k_size
    x0, y0, x1, y1 = box
    qy, qx = torch.meshgrid(torch.arange(hq) + 0.5, torch.arange(wq) + 0.5, indexing="ij")
    qx = (x0 + qx.flatten() / wq * (x1 - x0)) * wk - 0.5
    qy = (y0 + qy.flatten() / hq * (y1 - y0)) * hk - 0.5
    ky, kx = torch.meshgrid(torch.arange(hk), torch.arange(wk), indexing="ij")
    dx = kx.flatten()[None].float() - qx[:, None]
    dy = ky.flatten()[None].float() - qy[:, None]
    r = torch.stack([dx, dy, dx * dx + dy * dy], -1)           # (Nq, Nk, 3)
    return torch.einsum("qkr,hr->hqk", r, w_r).softmax(-1)     # (heads, Nq, Nk)


@pytest.mark.parametrize("q_size,k_size,box", [((12, 12), (12, 12), (0.0, 0.0, 1.0, 1.0)),
                                                ((16, 16), (16, 16), (1 / 3, 1 / 3, 2 / 3, 2 / 3)),
                                                ((5, 7), (9, 6), (0.1, 0.25, 0.45, 0.8))])
def test_separable_positional_term_equals_eq2(q_size, k_size, box):
    """P = P_y (x) P_x and P v through the two factors equal softmax(r W_r) and its product."""
    torch.manual_seed(0)
    lcc = LCC(16, heads=2, positional=True)
    with torch.no_grad():
        lcc.w_r.copy_(torch.tensor([[0.3, -0.2, -1.0], [-0.1, 0.4, -0.35]]))
        lcc.w_r.requires_grad_(False)
        ref = _eq2_positional(lcc.w_r, q_size, k_size, box)
        torch.testing.assert_close(lcc.positional_attention(q_size, k_size, box), ref,
                                   atol=1e-6, rtol=1e-5)
        per_sample = torch.tensor([box, (0.0, 0.0, 1.0, 1.0)])
        both = lcc.positional_attention(q_size, k_size, per_sample)
        torch.testing.assert_close(both[0], ref, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(
            both[1], _eq2_positional(lcc.w_r, q_size, k_size, (0.0, 0.0, 1.0, 1.0)),
            atol=1e-6, rtol=1e-5)
        v = torch.randn(2, 2, k_size[0] * k_size[1], 8)
        torch.testing.assert_close(lcc.apply_positional(v, q_size, k_size, box), ref @ v,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lcc.apply_positional(v, q_size, k_size, per_sample),
                                   both @ v, atol=1e-5, rtol=1e-5)


def test_positional_factors_hold_no_subnormal_numbers():
    """Gaussian tails at 16 x 16 cells fall below float32's normal range; they are flushed to 0
    (gemm on subnormal inputs is ~10x slower on CPUs) and the result does not move."""
    lcc = LCC(8, positional=True)   # the init W_r = (0, 0, -1)
    with torch.no_grad():
        ref = _eq2_positional(lcc.w_r, (16, 16), (16, 16), (0.0, 0.0, 1.0, 1.0))
        assert ((ref > 0) & (ref < torch.finfo(torch.float32).tiny)).any()   # Eq. 2 has some
        for f in lcc.positional_factors((16, 16), (16, 16)):
            assert not ((f > 0) & (f < torch.finfo(torch.float32).tiny)).any()
        v = torch.randn(1, 1, 256, 8)
        torch.testing.assert_close(lcc.apply_positional(v, (16, 16), (16, 16)), ref @ v,
                                   atol=1e-6, rtol=1e-5)


def test_positional_offsets_are_cached_and_per_sample_boxes_match():
    lcc = LCC(8, positional=True)
    box = (0.25, 0.25, 0.75, 0.75)
    lcc.positional_attention((6, 6), (6, 6), box)
    assert len(lcc._offsets) == 1
    lcc.positional_attention((6, 6), (6, 6), box)
    assert len(lcc._offsets) == 1  # computed once per feature size and placement
    per_sample = lcc.positional_attention((6, 6), (6, 6), torch.tensor([box, box]))
    torch.testing.assert_close(per_sample[0], lcc.positional_attention((6, 6), (6, 6), box))


def test_lcc_gate_mixes_content_and_position():
    torch.manual_seed(0)
    lcc = LCC(8, positional=True)
    x_i, x_u = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        lcc.gate.fill_(50.0)  # sigma(z) = 1: pure content (Eq. 1)
    content = lcc(x_i, x_u)
    plain = LCC(8, positional=False)
    plain.load_state_dict({k: v for k, v in lcc.state_dict().items() if k not in ("w_r", "gate")})
    torch.testing.assert_close(content, plain(x_i, x_u), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        lcc.gate.fill_(-50.0)  # sigma(z) = 0: pure positional attention over the values
    v = lcc.value(x_u).flatten(2).transpose(1, 2)
    p = lcc.positional_attention((4, 4), (4, 4))[0]
    expected = (p @ v[0]).t().reshape(1, 8, 4, 4)
    torch.testing.assert_close(lcc(x_i, x_u), expected, atol=1e-5, rtol=1e-5)


def test_crop_to_patch_takes_the_patch_region():
    feat = torch.arange(12 * 12, dtype=torch.float32).view(1, 1, 12, 12)
    crop = crop_to_patch(feat, (1 / 3, 1 / 3, 2 / 3, 2 / 3), (4, 4))
    torch.testing.assert_close(crop, feat[:, :, 4:8, 4:8])
    crops = crop_to_patch(feat, torch.tensor([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]), (6, 6))
    torch.testing.assert_close(crops[0, 0], feat[0, 0, :6, :6])
    torch.testing.assert_close(crops[1, 0], feat[0, 0, 6:, 6:])


def test_ale_alg1_wiring():
    """(d) = Alg. 1: L1-L3 enhance I, M, L from the originals, L4 enhances I~ with M~, L~."""
    torch.manual_seed(0)
    ale = ALE(8, ("medium", "large"), "d", kernels=(3, 5))
    x_i, x_m, x_l = (torch.randn(1, 8, 6, 6) for _ in range(3))
    r = ale.rounds[0]
    i1 = r["local"](x_i, [x_m, x_l])
    m1 = r["medium"](x_m, [x_i, x_l])
    l1 = r["large"](x_l, [x_i, x_m])
    torch.testing.assert_close(ale(x_i, {"medium": x_m, "large": x_l}), ale.final(i1, [m1, l1]))


def test_lfi_residual_enhancement():
    lfi = LFI(8, 2, kernels=(3, 5, 7))
    assert [c.kernel_size[0] for c in lfi.attention.convs] == [3, 5, 7]
    assert all(c.groups == c.in_channels for c in lfi.attention.convs)  # depthwise
    t, r1, r2 = (torch.randn(2, 8, 5, 5) for _ in range(3))
    tok = lfi.tokenize_target(t)
    e = torch.sigmoid(lfi.attention(torch.cat([lfi.tokenize_refs[0](r1),
                                               lfi.tokenize_refs[1](r2)], 1)))
    torch.testing.assert_close(lfi(t, [r1, r2]), tok + e * tok)  # Eq. 7


def _global_context_case():
    """A tiny FCtL with LCF switched on (non-zero output projection), inputs and two placements
    in a global context."""
    torch.manual_seed(0)
    cfg = FCtLConfig(**TINY)
    model = FCtL(cfg).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.lcf.proj.weight, std=0.1)
    x, ctx = _inputs(cfg)
    boxes = {"large": torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]])}
    return model, x, ctx, boxes


def test_cached_global_context_equals_image():
    model, x, ctx, boxes = _global_context_case()
    with torch.inference_mode():
        direct = model(x, ctx["medium"], ctx["large"][:1].expand(2, -1, -1, -1), boxes=boxes)
        feats = model.encode_context(ctx["large"][:1])
        cached = model(x, ctx["medium"], cached={"large": feats}, boxes=boxes)
    torch.testing.assert_close(direct, cached, atol=1e-4, rtol=1e-4)


def test_encoder_called_once_for_all_streams(monkeypatch):
    cfg = FCtLConfig(**TINY)
    model = FCtL(cfg).eval()
    calls = []
    orig = model.encoder.forward
    monkeypatch.setattr(model.encoder, "forward", lambda x: calls.append(x.shape) or orig(x))
    x, ctx = _inputs(cfg)
    with torch.inference_mode():
        model(x, **ctx, boxes=_boxes(cfg))
    assert calls == [torch.Size([6, 3, 64, 64])]


def test_focal_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, 4)
    target = torch.randint(0, 5, (2, 4, 4))
    ce = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, target), ce)
    assert FocalLoss(gamma=3.0)(logits, target) < ce
    masked = target.clone()
    masked[0] = 0
    expected = torch.nn.functional.cross_entropy(logits, masked, ignore_index=0)
    torch.testing.assert_close(FocalLoss(gamma=0.0, ignore_index=0)(logits, masked), expected)


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = FCtLConfig(**TINY)
    model = FCtL(cfg).eval()
    card = ModelCard(config=cfg, classes=[ClassInfo(i, f"c{i}", (i, 2 * i, 3 * i)) for i in range(7)],
                     ignore_index=0, gsd=0.5, provenance={"data": "test"})
    path = save_checkpoint(tmp_path / "m.safetensors", model, card)
    loaded, card2 = load_checkpoint(path)
    assert card2.to_dict() == card.to_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x, ctx = _inputs(cfg, b=1)
    with torch.inference_mode():
        torch.testing.assert_close(model(x, **ctx, boxes=_boxes(cfg)),
                                   loaded(x, **ctx, boxes=_boxes(cfg)))


def test_config_validation_messages():
    with pytest.raises(ValueError, match="unknown fusion"):
        FCtLConfig(fusion="max")
    with pytest.raises(ValueError, match="one reference"):
        FCtLConfig(ale="a", ale_refs=("medium", "large"))
    with pytest.raises(ValueError, match="smaller than"):
        FCtLConfig(medium_context="100")
    with pytest.raises(ValueError, match="no feature map at stride"):
        FCtL(FCtLConfig(backbone="vit_tiny_patch16_224"))
    assert FCtLConfig.from_dict(FCtLConfig(**TINY).to_dict()) == FCtLConfig(**TINY)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet18"])
def test_fold_batchnorm_keeps_outputs(backbone):
    from model_core.models.fuse import fold_batchnorm

    torch.manual_seed(0)
    cfg = FCtLConfig(backbone=backbone, patch_size=96, large_context="x4", key_channels=32)
    model = FCtL(cfg).eval()
    for m in model.modules():  # non-trivial statistics, so that folding really changes weights
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    x, ctx = _inputs(cfg)
    with torch.inference_mode():
        before = model(x, **ctx)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(model) == n_bn > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fold_batchnorm(model) == 0
    with torch.inference_mode():
        torch.testing.assert_close(model(x, **ctx), before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="inference"):
        fold_batchnorm(FCtL(cfg).train())


def test_group_depth_conv_fuses_into_one_depthwise_conv():
    """Eq. 6's groups, each kernel zero-padded to the largest window: the same sums."""
    from model_core.models import GroupDepthConv

    torch.manual_seed(0)
    conv = GroupDepthConv(10, (3, 5, 7, 9)).eval()
    x = torch.randn(2, 10, 11, 13)
    with torch.no_grad():
        ref = conv(x)
        keys = set(conv.state_dict())
        conv.fuse()
        assert conv.fused_weight.shape == (10, 1, 9, 9)
        assert set(conv.state_dict()) == keys   # checkpoints keep the per-group parameters
        torch.testing.assert_close(conv(x), ref, atol=1e-6, rtol=1e-5)
        conv.train()                             # training goes back to the parameters
        torch.nn.init.normal_(conv.convs[0].weight)
        assert not torch.allclose(conv(x), ref)
    with pytest.raises(ValueError, match="inference"):
        conv.fuse()


def test_fuse_for_inference_keeps_outputs():
    from model_core.models.fuse import fusable, fuse_for_inference

    model, x, ctx, boxes = _global_context_case()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    with torch.inference_mode():
        before = model(x, **ctx, boxes=boxes)
    assert fusable(model)
    # BN + 4 LFI attentions of ALE (d) (3 in the round, 1 final)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fuse_for_inference(model) == n_bn + 4
    with torch.inference_mode():
        torch.testing.assert_close(model(x, **ctx, boxes=boxes), before, atol=1e-4, rtol=1e-4)


def test_cpu_activations_fused_into_their_convolutions_give_the_same_logits(monkeypatch):
    """On CPUs the Predictor computes each ReLU6 / ReLU inside the convolution before it
    (oneDNN's fused kernel): every one of the bundled encoder's 32 pairs, the same logits, the
    caller's model untouched; bf16 inputs fall back to the two calls."""
    import model_core.inference.predict as predict
    from model_core.checkpoint import DEFAULT_MODEL, load_checkpoint
    from model_core.inference.predict import Predictor
    from model_core.models.fuse import ConvActivation, _pointwise_works

    if not _pointwise_works():
        pytest.skip("this PyTorch has no oneDNN fused convolution")
    model, card = load_checkpoint(DEFAULT_MODEL)
    model.eval()
    fused = Predictor(model, torch.device("cpu")).model
    assert sum(isinstance(m, ConvActivation) for m in fused.encoder.modules()) == 32
    assert not any(isinstance(m, ConvActivation) for m in model.modules())
    monkeypatch.setattr(predict, "fuse_activations", lambda m: 0)
    plain = Predictor(model, torch.device("cpu")).model
    assert not any(isinstance(m, ConvActivation) for m in plain.modules())
    g = torch.Generator().manual_seed(0)
    p = card.config.patch_size
    x, medium = (torch.rand(2, 3, p, p, generator=g) for _ in range(2))
    large = torch.rand(1, 3, p, p, generator=g)
    boxes = {"large": torch.tensor([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.8, 0.8]])}
    with torch.inference_mode():
        kw = {"cached": {"large": plain.encode_context(large).expand(2, -1, -1, -1)},
              "boxes": boxes}
        torch.testing.assert_close(fused(x, medium, **kw), plain(x, medium, **kw),
                                   atol=1e-5, rtol=1e-5)
        conv = next(m for m in fused.encoder.modules() if isinstance(m, ConvActivation))
        xb = torch.rand(1, conv.conv.in_channels, 16, 16, dtype=torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(xb)
        assert out.dtype == torch.bfloat16 and float(out.max()) <= 6.0


def test_call_chunks_and_a_shared_context_give_the_batched_result(monkeypatch):
    """call_chunk (the CPU path) runs the encoder and decoder a few images at a time; a context
    shared by the batch (size 1 or expanded) is projected once: both equal the batched result."""
    model, x, ctx, boxes = _global_context_case()
    with torch.inference_mode():
        feats = model.encode_context(ctx["large"][:1])
        batched = model(x, ctx["medium"], cached={"large": feats.expand(2, -1, -1, -1)},
                        boxes=boxes)
        per_sample = model(x, ctx["medium"], cached={"large": feats.repeat(2, 1, 1, 1)},
                           boxes=boxes)
        calls = []
        orig = model.encoder.forward
        monkeypatch.setattr(model.encoder, "forward", lambda t: calls.append(t.shape) or orig(t))
        model.call_chunk = 1
        separate = model(x, ctx["medium"], cached={"large": feats}, boxes=boxes)
        model.call_chunk = 3
        chunked = model(x, ctx["medium"], cached={"large": feats}, boxes=boxes)
    # 2 patches + their 2 medium contexts: one by one, then 3 and the remaining 1
    assert [c[0] for c in calls] == [1, 1, 1, 1, 3, 1]
    torch.testing.assert_close(per_sample, batched, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(separate, batched, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(chunked, batched, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backbone, patch, chunk", [
    ("efficientnet_lite0", 256, 5),    # stem 32 ch at stride 2: 2 MiB per image
    ("efficientnet_lite0", 508, 1),    # 7.9 MiB
    ("vgg16", 256, 1),                 # 64 ch at full size: 16 MiB
])
def test_cpu_call_chunk_keeps_the_stem_in_cache(backbone, patch, chunk):
    """The CPU Predictor runs the encoder and decoder as many images per call as keep the stem's
    output within 10 MiB (on GPU one call); the bundled model's 256 px patches go 5 at a time."""
    from model_core.inference.predict import Predictor

    model = FCtL(FCtLConfig(backbone=backbone, patch_size=patch, num_classes=7)).eval()
    assert model.cpu_call_chunk() == chunk
    assert Predictor(model, torch.device("cpu")).model.call_chunk == chunk
    assert model.call_chunk == 0   # the caller's model is left as it was
