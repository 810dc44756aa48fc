"""Locality-aware Contextual Correlation, LCC (Sec. 3.3.1, Eq. 1-2).

The local features X_I attend to one context's features X_U (U in {I, M, L}). The content term
softmax(X_I (x) X_U) runs through ``scaled_dot_product_attention``. Because the two softmaxed
maps of Eq. 2 are mixed linearly before multiplying the values, Eq. 2 is evaluated as
sigma(z) * SDPA(q, k, v) + (1 - sigma(z)) * P v, and neither map is materialised; Norm(.) is the
identity here since both rows already sum to 1.

The positional map P = softmax(r W_r) is separable: with r = (dx, dy, dx^2 + dy^2) the score
w_1 dx + w_2 dy + w_3 (dx^2 + dy^2) is a function of dx plus a function of dy, so the softmax over
the key grid is the outer product of a softmax over key columns (P_x) and one over key rows
(P_y). P v is applied as two small matrix products (h_k w_q w_k + h_q h_k w_q multiply-adds per
channel instead of h_q w_q h_k w_k: 8x fewer at 16 x 16 cells), for shared and per-sample patch
placements alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Box = tuple[float, float, float, float]
FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)
# Probabilities below float32's smallest normal number are set to 0: gemm on subnormal inputs is
# ~10x slower on x86 CPUs, and Gaussian tails of P at 16 x 16 cells are 14 % subnormal.
_TINY = torch.finfo(torch.float32).tiny


def axis_offsets(n_q: int, n_k: int, lo: Tensor, hi: Tensor) -> Tensor:
    """Key-minus-query offsets along one axis, in key-grid cells: (B, n_q, n_k).

    The local patch spans [lo, hi] (normalised, one value per sample) of the context window;
    query cell centres are mapped into the context's grid so that distances are measured on the
    ground.
    """
    q = (torch.arange(n_q, dtype=torch.float32) + 0.5) / n_q
    q = (lo[:, None] + q[None] * (hi - lo)[:, None]) * n_k - 0.5
    k = torch.arange(n_k, dtype=torch.float32)
    return k[None, None, :] - q[:, :, None]


def _box_tensor(box: Box | Tensor) -> Tensor:
    return torch.as_tensor(box, dtype=torch.float32).detach().cpu().view(-1, 4)


class LCC(nn.Module):
    """Correlation of the local features with one context, with gated relative positional
    embeddings.

    Implements M_U = Norm(sigma(z) Softmax(X_I (x) X_U) + (1 - sigma(z)) Softmax(r W_r)) and
    X_{I|U} = M_U (x) X_U (Eq. 2); with ``positional=False`` it is Eq. 1 alone.

    ``attention_scale="none"`` is the paper's Softmax(X_I (x) X_U) (and the conference code's);
    ``"sqrt"`` divides the scores by sqrt(d) as transformers do: at d = 320-512 unscaled scores of
    unnormalised CNN features saturate the softmax to one key per query, whose gradient vanishes.
    """

    def __init__(self, channels: int, key_channels: int | None = None, heads: int = 1,
                 positional: bool = True, attention_scale: str = "sqrt") -> None:
        super().__init__()
        if attention_scale not in ("sqrt", "none"):
            raise ValueError(f"unknown attention scale {attention_scale!r}")
        self.attention_scale = attention_scale
        key_channels = key_channels or channels
        if key_channels % heads or channels % heads:
            raise ValueError(f"channels ({channels}, {key_channels}) must divide into {heads} heads")
        self.heads = heads
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.positional = positional
        if positional:
            # ConViT-style locality init: score = -alpha * |d|^2, a Gaussian around the query.
            self.w_r = nn.Parameter(torch.tensor([[0.0, 0.0, -1.0]]).repeat(heads, 1))
            # Gate starts mostly positional (sigma(-1) = 0.27 on content).
            self.gate = nn.Parameter(torch.full((heads,), -1.0))
        self._offsets: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _axis_offsets(self, q_size: tuple[int, int], k_size: tuple[int, int],
                      box: Box | Tensor) -> tuple[Tensor, Tensor]:
        """(dy (B, h_q, h_k), dx (B, w_q, w_k)); cached for placements given as tuples."""
        key = None
        if not isinstance(box, Tensor):
            key = (q_size, k_size, tuple(round(float(v), 6) for v in box))
            if key in self._offsets:
                return self._offsets[key]
        x0, y0, x1, y1 = _box_tensor(box).unbind(-1)
        out = (axis_offsets(q_size[0], k_size[0], y0, y1),
               axis_offsets(q_size[1], k_size[1], x0, x1))
        if key is not None:
            self._offsets[key] = out
        return out

    def positional_factors(self, q_size: tuple[int, int], k_size: tuple[int, int],
                           box: Box | Tensor = FULL_BOX) -> tuple[Tensor, Tensor]:
        """P_y (B', heads, h_q, h_k) and P_x (B', heads, w_q, w_k), with
        softmax(r W_r)[(qy, qx), (ky, kx)] = P_y[qy, ky] * P_x[qx, kx]; B' = 1 for one placement.
        """
        dy, dx = (d.to(self.w_r.device) for d in self._axis_offsets(q_size, k_size, box))
        w = self.w_r.float()   # (heads, 3): weights of dx, dy, dx^2 + dy^2

        def axis(d: Tensor, w_lin: Tensor) -> Tensor:
            score = d[:, None] * w_lin.view(1, -1, 1, 1) + (d * d)[:, None] * w[:, 2].view(1, -1, 1, 1)
            p = score.softmax(dim=-1)
            return p.masked_fill(p < _TINY, 0.0)

        return axis(dy, w[:, 1]), axis(dx, w[:, 0])

    def positional_attention(self, q_size: tuple[int, int], k_size: tuple[int, int],
                             box: Box | Tensor = FULL_BOX) -> Tensor:
        """The map softmax(r W_r) of Eq. 2 per head: (heads, N_q, N_k), or (B, heads, N_q, N_k)
        for per-sample boxes. For inspection and tests: :meth:`forward` never materialises it.
        """
        py, px = self.positional_factors(q_size, k_size, box)
        b, nh = py.shape[:2]
        p = py[:, :, :, None, :, None] * px[:, :, None, :, None, :]
        p = p.reshape(b, nh, q_size[0] * q_size[1], k_size[0] * k_size[1])
        return p if isinstance(box, Tensor) and box.dim() == 2 else p[0]

    def apply_positional(self, v: Tensor, q_size: tuple[int, int], k_size: tuple[int, int],
                         box: Box | Tensor = FULL_BOX) -> Tensor:
        """softmax(r W_r) v for values v (B, heads, h_k * w_k, d): (B, heads, h_q * w_q, d)."""
        py, px = self.positional_factors(q_size, k_size, box)
        py, px = py.to(v.dtype), px.to(v.dtype)
        b, nh, _, d = v.shape
        (hq, wq), (hk, wk) = q_size, k_size
        # sum over key columns: (B, heads, h_k, w_k, d) -> (B, heads, h_k, w_q, d)
        t = torch.matmul(px[:, :, None], v.reshape(b, nh, hk, wk, d))
        # then over key rows: (B, heads, h_q, h_k) x (B, heads, h_k, w_q * d)
        out = torch.matmul(py, t.reshape(b, nh, hk, wq * d))
        return out.reshape(b, nh, hq * wq, d)

    def forward(self, x_i: Tensor, x_u: Tensor, box: Box | Tensor = FULL_BOX) -> Tensor:
        b, c, h, w = x_i.shape
        hk, wk = x_u.shape[-2:]
        nh = self.heads
        q = self.query(x_i).flatten(2).view(b, nh, -1, h * w).transpose(-1, -2)
        # one context for the whole batch (the cached global one, size 1 or expanded): project
        # it once
        u = x_u[:1] if x_u.shape[0] == 1 or x_u.stride(0) == 0 else x_u
        n = u.shape[0]
        k = self.key(u).flatten(2).view(n, nh, -1, hk * wk).transpose(-1, -2)
        v = self.value(u).flatten(2).view(n, nh, -1, hk * wk).transpose(-1, -2)
        k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        scale = None if self.attention_scale == "sqrt" else 1.0
        out = F.scaled_dot_product_attention(q, k, v, scale=scale)  # content term (B, h, Nq, C/h)
        if self.positional:
            g = torch.sigmoid(self.gate).to(v.dtype).view(1, nh, 1, 1)
            out = g * out + (1 - g) * self.apply_positional(v, (h, w), (hk, wk), box)
        return out.transpose(-1, -2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, positional={self.positional}, "
                f"attention_scale={self.attention_scale}")
