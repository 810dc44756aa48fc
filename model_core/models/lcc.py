"""Locality-aware Contextual Correlation, LCC (Sec. 3.3.1, Eq. 1-2).

The local features X_I attend to one context's features X_U (U in {I, M, L}). The content term
softmax(X_I (x) X_U) runs through ``scaled_dot_product_attention``; the gated positional term
softmax(r W_r) depends on no input and is computed once per feature size and patch placement.
Because the two softmaxed maps are mixed linearly before multiplying the values, Eq. 2 is
evaluated as sigma(z) * SDPA(q, k, v) + (1 - sigma(z)) * P v, which never materialises the
content attention map; Norm(.) of Eq. 2 is the identity here since both rows already sum to 1.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

Box = tuple[float, float, float, float]
FULL_BOX: Box = (0.0, 0.0, 1.0, 1.0)


def relative_positions(q_size: tuple[int, int], k_size: tuple[int, int],
                       box: Box | Tensor = FULL_BOX) -> Tensor:
    """r of Eq. 2: (dx, dy, dx^2 + dy^2) for every (query, key) pair, in key-grid cells.

    ``box`` is where the local patch lies inside the context window, as normalised
    (x0, y0, x1, y1); a tensor of shape (B, 4) gives one placement per sample. Query cell centres
    are mapped into the context's grid so that distances are measured on the ground.

    Returns (Nq, Nk, 3), or (B, Nq, Nk, 3) for per-sample boxes.
    """
    hq, wq = q_size
    hk, wk = k_size
    b = torch.as_tensor(box, dtype=torch.float32)
    batched = b.dim() == 2
    b = b.view(-1, 4)
    x0, y0, x1, y1 = b.unbind(-1)
    qx = (torch.arange(wq, dtype=torch.float32) + 0.5) / wq  # (wq,)
    qy = (torch.arange(hq, dtype=torch.float32) + 0.5) / hq
    qx = (x0[:, None] + qx[None] * (x1 - x0)[:, None]) * wk - 0.5  # (B, wq) in key cells
    qy = (y0[:, None] + qy[None] * (y1 - y0)[:, None]) * hk - 0.5
    kx = torch.arange(wk, dtype=torch.float32)
    ky = torch.arange(hk, dtype=torch.float32)
    dx = kx[None, None, None, None, :] - qx[:, None, :, None, None]  # (B, 1, wq, 1, wk)
    dy = ky[None, None, None, :, None] - qy[:, :, None, None, None]  # (B, hq, 1, hk, 1)
    dx, dy = torch.broadcast_tensors(dx, dy)  # (B, hq, wq, hk, wk)
    r = torch.stack((dx, dy, dx * dx + dy * dy), dim=-1).reshape(-1, hq * wq, hk * wk, 3)
    return r if batched else r[0]


class LCC(nn.Module):
    """Correlation of the local features with one context, with gated positional embeddings.

    Implements M_U = Norm(sigma(z) Softmax(X_I (x) X_U) + (1 - sigma(z)) Softmax(r W_r)) and
    X_{I|U} = M_U (x) X_U (Eq. 2); with ``positional=False`` it is Eq. 1 alone.
    """

    def __init__(self, channels: int, key_channels: int | None = None, heads: int = 1,
                 positional: bool = True) -> None:
        super().__init__()
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
        self._r_cache: dict[tuple, Tensor] = {}

    def positional_attention(self, q_size: tuple[int, int], k_size: tuple[int, int],
                             box: Box | Tensor = FULL_BOX) -> Tensor:
        """Softmax(r W_r) per head: (heads, Nq, Nk), or (B, heads, Nq, Nk) for per-sample boxes."""
        if isinstance(box, Tensor):
            r = relative_positions(q_size, k_size, box.detach().float().cpu())
        else:
            key = (q_size, k_size, tuple(round(float(v), 6) for v in box))
            r = self._r_cache.get(key)
            if r is None:
                r = relative_positions(q_size, k_size, box)
                self._r_cache[key] = r
        r = r.to(self.w_r.device)
        scores = torch.matmul(r, self.w_r.t().float())  # (..., Nq, Nk, heads)
        return scores.movedim(-1, -3).softmax(dim=-1)

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
        out = F.scaled_dot_product_attention(q, k, v)  # content term, (B, heads, Nq, C/heads)
        if self.positional:
            p = self.positional_attention((h, w), (hk, wk), box).to(v.dtype)
            g = torch.sigmoid(self.gate).to(v.dtype).view(1, nh, 1, 1)
            out = g * out + (1 - g) * torch.matmul(p, v)
        return out.transpose(-1, -2).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, positional={self.positional}"
