"""The paper's equations, each checked against a version written out here from the paper's text,
independently of the code under test (hand-set projections, explicit sums, known probabilities).

Each test names the wrong versions it was shown to catch (tried by editing the code under test).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model_core.config import FCtLConfig
from model_core.losses import FocalLoss
from model_core.models import ALE, LCC, LCF, LFI, MCF, FCtL

TINY = dict(backbone="mobilenetv3_small_050", patch_size=64, decoder_channels=16,
            key_channels=32, heads=1)


def _set_1x1(conv: torch.nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None = None
             ) -> None:
    with torch.no_grad():
        conv.weight.copy_(weight.view_as(conv.weight))
        if conv.bias is not None:
            conv.bias.copy_(bias if bias is not None else torch.zeros_like(conv.bias))


def _lcc_by_hand(seed: int = 0):
    """An LCC with hand-set projections W_q, W_k, W_v and the features they act on."""
    g = torch.Generator().manual_seed(seed)
    c, d = 6, 4
    lcc = LCC(c, key_channels=d, positional=False, attention_scale="none")
    wq, wk, wv = (torch.randn(d, c, generator=g) * 0.7, torch.randn(d, c, generator=g) * 0.7,
                  torch.randn(c, c, generator=g))
    bq, bk = torch.randn(d, generator=g) * 0.1, torch.randn(d, generator=g) * 0.1
    _set_1x1(lcc.query, wq, bq)
    _set_1x1(lcc.key, wk, bk)
    _set_1x1(lcc.value, wv)
    x_i = torch.randn(1, c, 3, 4, generator=g)
    x_u = torch.randn(1, c, 5, 2, generator=g)
    return lcc, (wq, bq, wk, bk, wv), x_i, x_u


def _eq1(params, x_i: torch.Tensor, x_u: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Eq. 1 written out: M = softmax over keys of (W_q x_i)^T (W_k x_u); X = M (W_v x_u)."""
    wq, bq, wk, bk, wv = params
    q = torch.einsum("dc,cn->nd", wq, x_i[0].flatten(1)) + bq          # (N_q, d)
    k = torch.einsum("dc,cn->nd", wk, x_u[0].flatten(1)) + bk          # (N_k, d)
    v = torch.einsum("ec,cn->ne", wv, x_u[0].flatten(1))               # (N_k, C)
    scores = (q @ k.t()) * scale                                        # (N_q, N_k)
    m = torch.exp(scores - scores.max(dim=1, keepdim=True).values)
    m = m / m.sum(dim=1, keepdim=True)                                  # each query's row sums to 1
    out = m @ v                                                         # (N_q, C)
    return out.t().reshape(1, -1, *x_i.shape[-2:])


def test_eq1_content_correlation_equals_softmax_qk_v():
    """Catches: softmax over queries instead of keys; the values' mean instead of attention."""
    lcc, params, x_i, x_u = _lcc_by_hand()
    with torch.no_grad():
        torch.testing.assert_close(lcc(x_i, x_u), _eq1(params, x_i, x_u), atol=1e-5, rtol=1e-5)
        lcc.attention_scale = "sqrt"
        torch.testing.assert_close(lcc(x_i, x_u), _eq1(params, x_i, x_u, 1 / math.sqrt(4)),
                                   atol=1e-5, rtol=1e-5)
        # different queries attend differently (not one map for all)
        out = lcc(x_i, x_u).flatten(2)[0]
        assert (out - out.mean(1, keepdim=True)).abs().max() > 1e-2


def _eq2_positional(w_r: torch.Tensor, q_size, k_size, box) -> torch.Tensor:
    """softmax over keys of r W_r, r = (dx, dy, dx^2 + dy^2), query cells mapped into the key
    grid through the patch's box (normalised x0, y0, x1, y1): (N_q, N_k)."""
    (hq, wq), (hk, wk) = q_size, k_size
    x0, y0, x1, y1 = box
    rows = []
    for qy in range(hq):
        for qx in range(wq):
            cy = (y0 + (qy + 0.5) / hq * (y1 - y0)) * hk - 0.5
            cx = (x0 + (qx + 0.5) / wq * (x1 - x0)) * wk - 0.5
            row = []
            for ky in range(hk):
                for kx in range(wk):
                    dx, dy = kx - cx, ky - cy
                    row.append(float(w_r[0] * dx + w_r[1] * dy + w_r[2] * (dx * dx + dy * dy)))
            rows.append(row)
    return torch.tensor(rows).softmax(dim=1)


@pytest.mark.parametrize("z", [-1.2, 0.0, 0.8])
def test_eq2_gate_mixes_softmaxed_content_and_position(z):
    """M_U = sigma(z) softmax(X_I (x) X_U) + (1 - sigma(z)) softmax(r W_r), X = M_U (x) V, for a
    patch box inside the context."""
    lcc, params, x_i, x_u = _lcc_by_hand(1)
    pos = LCC(6, key_channels=4, positional=True, attention_scale="none")
    pos.load_state_dict({**lcc.state_dict(), "w_r": torch.tensor([[0.2, -0.3, -0.6]]),
                         "gate": torch.tensor([z])})
    box = (0.2, 0.1, 0.7, 0.9)
    with torch.no_grad():
        content = _eq1(params, x_i, x_u).flatten(2)[0].t()               # (N_q, C)
        p = _eq2_positional(pos.w_r[0], (3, 4), (5, 2), box)              # (N_q, N_k)
        v = torch.einsum("ec,cn->ne", params[4], x_u[0].flatten(1))
        s = 1 / (1 + math.exp(-z))
        expected = (s * content + (1 - s) * (p @ v)).t().reshape(1, 6, 3, 4)
        torch.testing.assert_close(pos(x_i, x_u, box), expected, atol=1e-5, rtol=1e-5)


def test_mcf_weighted_fusion_uses_its_softmaxed_weights():
    """Eq. 4 with constant weights: sum_U softmax(logits)_U X_{I|U}, which is not the average
    once the logits differ. Catches: the weighted fusion collapsed to the average."""
    torch.manual_seed(0)
    feats = [torch.randn(1, 4, 3, 3) for _ in range(3)]
    mcf = MCF(4, 3, "weighted")
    with torch.no_grad():
        mcf.logits.copy_(torch.tensor([1.0, 0.0, -1.0]))
    e = [math.exp(1.0), 1.0, math.exp(-1.0)]
    w = [v / sum(e) for v in e]
    expected = w[0] * feats[0] + w[1] * feats[1] + w[2] * feats[2]
    torch.testing.assert_close(mcf(feats), expected)
    assert not torch.allclose(mcf(feats), sum(feats) / 3, atol=1e-3)
    torch.testing.assert_close(MCF(4, 3, "average")(feats), sum(feats) / 3)


def test_mcf_adaptive_weights_squeeze_and_split():
    """Eq. 3: concat -> 1x1 squeeze -> ReLU -> 1x1 -> softmax across the contexts per element."""
    torch.manual_seed(0)
    feats = [torch.randn(1, 4, 2, 2) for _ in range(3)]
    mcf = MCF(4, 3, "adaptive", reduction=2)
    sq, ex = mcf.estimate[0], mcf.estimate[2]
    x = torch.cat(feats, 1)[0].flatten(1)                                  # (12, 4 px)
    n = sq.out_channels
    hidden = (sq.weight.view(n, 12) @ x + sq.bias[:, None]).clamp(min=0)
    logits = (ex.weight.view(12, n) @ hidden + ex.bias[:, None]).view(3, 4, 2, 2)
    h = logits.softmax(dim=0)
    expected = (h * torch.stack([f[0] for f in feats])).sum(0, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(mcf(feats), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("p", [0.9, 0.6, 0.2])
def test_focal_loss_value_for_known_pt(p):
    """FL = -(1 - p_t)^gamma log p_t with gamma 3. Catches p_t^gamma * CE and
    (1 - p_t)^(gamma / 2) * CE."""
    logits = torch.tensor([math.log(p), math.log(1 - p)]).view(1, 2, 1, 1)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    expected = -((1 - p) ** 3) * math.log(p)
    assert FocalLoss(gamma=3.0)(logits, target).item() == pytest.approx(expected, rel=1e-5)
    assert FocalLoss(gamma=2.0)(logits, target).item() == pytest.approx(
        -((1 - p) ** 2) * math.log(p), rel=1e-5)


def _lcf_case(output: str = "projection"):
    torch.manual_seed(0)
    cfg = FCtLConfig(**TINY, lcf_output=output)
    model = FCtL(cfg).eval()
    if output == "projection":
        with torch.no_grad():
            torch.nn.init.normal_(model.lcf.proj.weight, std=0.2)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 64, 64, generator=g)
    med, big = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    return model, x, med, big


def test_patch_box_reaches_lcc():
    """Where the patch lies inside the global context changes LCF's output (the positional term
    of Eq. 2 measures offsets from the patch's place). Catches: LCF ignoring the patch box."""
    model, x, med, big = _lcf_case()
    with torch.no_grad():
        x_i = model.encoder(model.normalize(x))[2]
        ctx = {"medium": model.encoder(model.normalize(med))[2],
               "large": model.encoder(model.normalize(big))[2]}
        centred = {"medium": model.default_box("medium"), "large": (0.0, 0.0, 0.25, 0.25)}
        moved = {"medium": model.default_box("medium"), "large": (0.75, 0.75, 1.0, 1.0)}
        a, b = model.lcf(x_i, ctx, centred), model.lcf(x_i, ctx, moved)
        assert (a - b).abs().max() > 1e-3 * a.abs().max()
        ya = model(x, med, big, boxes={"large": centred["large"]})
        yb = model(x, med, big, boxes={"large": moved["large"]})
        assert not torch.allclose(ya, yb)


def test_lcf_output_projection_starts_at_zero_and_learns_at_conv_speed():
    """The projection starts from the baseline (LCF adds exactly 0) and, unlike the conference
    code's scalar gate, gives LCF a sizeable share of X_I within a few optimiser steps."""
    shares = {}
    for output in ("projection", "gamma"):
        torch.manual_seed(0)
        lcf = LCF(16, ("local", "medium"), output=output)
        x_i, x_m = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
        target = torch.randn(2, 16, 4, 4)
        boxes = {"medium": (1 / 3, 1 / 3, 2 / 3, 2 / 3)}
        assert lcf(x_i, {"medium": x_m}, boxes).abs().max() == 0
        opt = torch.optim.Adam(lcf.parameters(), lr=1e-3)
        for _ in range(20):
            loss = F.mse_loss(x_i + lcf(x_i, {"medium": x_m}, boxes), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            shares[output] = float(lcf(x_i, {"medium": x_m}, boxes).norm() / x_i.norm())
    # 16 channels here: 0.05 vs 0.003 after 20 steps (the gap grows with the channel count)
    assert shares["projection"] > 0.03
    assert shares["projection"] > 10 * shares["gamma"]


def _group_depth_conv_by_hand(conv_module, x: torch.Tensor) -> torch.Tensor:
    """Eq. 6: each channel group convolved channel by channel with its own window."""
    outs, start = [], 0
    for conv, n in zip(conv_module.convs, conv_module.groups):
        for ch in range(n):
            k = conv.weight[ch:ch + 1]                                # (1, 1, w, w)
            pad = k.shape[-1] // 2
            outs.append(F.conv2d(x[:, start + ch:start + ch + 1], k, conv.bias[ch:ch + 1],
                                 padding=pad))
        start += n
    return torch.cat(outs, 1)


def _lfi_by_hand(lfi: LFI, target: torch.Tensor, refs: list[torch.Tensor]) -> torch.Tensor:
    """Eq. 6-7: X_ref = concat of the tokenised references, E = sigmoid(GroupDepthConv(X_ref)),
    out = T + E * T with T the tokenised target."""
    def tok(conv, x):
        return torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x) + conv.bias.view(1, -1, 1, 1)

    t = tok(lfi.tokenize_target, target)
    x_ref = torch.cat([tok(c, r) for c, r in zip(lfi.tokenize_refs, refs)], 1)
    e = _group_depth_conv_by_hand(lfi.attention, x_ref)
    if lfi.activation == "sigmoid":
        e = torch.sigmoid(e)
    return t + e * t


@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_lfi_eq6_eq7(activation):
    torch.manual_seed(0)
    lfi = LFI(8, 2, kernels=(3, 5, 7, 9), activation=activation)
    t, r1, r2 = (torch.randn(1, 8, 9, 9) for _ in range(3))
    with torch.no_grad():
        torch.testing.assert_close(lfi(t, [r1, r2]), _lfi_by_hand(lfi, t, [r1, r2]),
                                   atol=1e-5, rtol=1e-5)


def test_ale_structure_d_is_algorithm_1():
    """Alg. 1: I1 = f(I; M, L), M1 = f(M; I, L), L1 = f(L; I, M) from the originals, then
    out = f(I1; M1, L1), every f written out by hand (Eq. 6-7)."""
    torch.manual_seed(0)
    ale = ALE(8, ("medium", "large"), "d", kernels=(3, 5))
    x_i, x_m, x_l = (torch.randn(1, 8, 6, 6) for _ in range(3))
    r = ale.rounds[0]
    with torch.no_grad():
        i1 = _lfi_by_hand(r["local"], x_i, [x_m, x_l])
        m1 = _lfi_by_hand(r["medium"], x_m, [x_i, x_l])
        l1 = _lfi_by_hand(r["large"], x_l, [x_i, x_m])
        expected = _lfi_by_hand(ale.final, i1, [m1, l1])
        torch.testing.assert_close(ale(x_i, {"medium": x_m, "large": x_l}), expected,
                                   atol=1e-5, rtol=1e-5)
    assert len(ale.rounds) == 1 and set(r) == {"local", "medium", "large"}


def test_fusion_is_x_plus_lcf_plus_ale():
    """Sec. 3.5: the decoder sees X_I + X_bar_I (LCF) + X_hat_I (ALE)."""
    model, x, med, big = _lcf_case()
    seen = {}
    orig = model.decoder.forward

    def spy(f8, f16, f32, size):
        seen["f32"] = f32
        return orig(f8, f16, f32, size)

    model.decoder.forward = spy
    box = {"large": (0.25, 0.25, 0.5, 0.5)}
    with torch.no_grad():
        model(x, med, big, boxes=box)
        x_i = model.encoder(model.normalize(x))[2]
        ctx = {"medium": model.encoder(model.normalize(med))[2],
               "large": model.encoder(model.normalize(big))[2]}
        boxes = {"medium": model.default_box("medium"), "large": box["large"]}
        from model_core.models import crop_to_patch
        crops = {r: crop_to_patch(ctx[r], boxes[r], tuple(x_i.shape[-2:])) for r in ("medium", "large")}
        expected = x_i + model.lcf(x_i, ctx, boxes) + model.ale(x_i, crops)
    torch.testing.assert_close(seen["f32"], expected, atol=1e-5, rtol=1e-5)


def test_binary_tasks_are_reported_by_the_foreground_iou():
    """The paper reports Inria by the building IoU; multi-class tasks by the mIoU."""
    import numpy as np

    from model_core.training.metrics import Scores

    cm = np.array([[80, 20], [10, 30]])
    s = Scores(cm, None, {0: "background", 1: "building"})
    assert s.headline == pytest.approx(30 / 60) and s.headline_name == "building IoU"
    assert s.miou == pytest.approx((80 / 110 + 30 / 60) / 2)
    multi = Scores(np.eye(3, dtype=int) * 5 + 1, 0)
    assert multi.headline == multi.miou and multi.headline_name == "mIoU"


def test_feature_grid_alignment_vgg16_508():
    """VGG16's 15 stride-32 cells cover 480 of a 508 px patch: after alignment, each local
    query cell's offset to the medium context's key cells is measured between their centres on
    the ground (the old code assumed the cells spanned all 508 px: up to 0.85 cell off)."""
    from model_core.models.fctl import align_box
    from model_core.models.lcc import axis_offsets

    model = FCtL(FCtLConfig(backbone="vgg16", patch_size=508, decoder_channels=16))
    fx, fy = model.feature_coverage((508, 508), (15, 15))
    assert fx == fy == pytest.approx(480 / 508)
    box = align_box((1 / 3, 1 / 3, 2 / 3, 2 / 3), fx, fy)      # x3 context, patch centred
    d = axis_offsets(15, 15, torch.tensor([box[0]]), torch.tensor([box[2]]))[0]
    q_ground = 508 + (torch.arange(15) + 0.5) * 32               # query centres, ground px
    k_ground = (torch.arange(15) + 0.5) * 96                     # key centres (3 px per px)
    expected = (k_ground[None, :] - q_ground[:, None]) / 96      # in key cells
    torch.testing.assert_close(d, expected, atol=1e-4, rtol=0)
    lite = FCtL(FCtLConfig(**TINY))
    assert lite.feature_coverage((64, 64), (2, 2)) == (1.0, 1.0)   # exact grids: unchanged
