"""Functional forms of the exact norms and of explicit-heads attention.

This module imports nothing but torch: emitted PyTorch code calls these functions (through its
prelude) and must run wherever torch runs, with torch.export, torch.compile and ONNX export.

Compensated norms (minimization.md section 3). A norm over N channels whose channels R (r of them)
hold known constants k_j is evaluated on the kept channels K only, with S1 = sum k_j and
S2 = sum k_j^2 standing in for the removed channels:

    mu  = (sum_K x_i + S1) / N
    var = (sum_K (x_i - mu)^2 + sum_R (k_j - mu)^2) / N
    sum_R (k_j - mu)^2 = (S2 - S1^2 / r) + r (S1 / r - mu)^2

The last line is the same number as `S2 - 2 mu S1 + r mu^2` but is a sum of two non-negative terms,
so it does not cancel catastrophically when the constants are large beside their spread.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

Scalar = Union[float, torch.Tensor]

__all__ = [
    "compensated_layer_norm",
    "compensated_rms_norm",
    "rms_norm",
    "head_attention",
    "rope_tables",
]


def _removed_sum_of_squares(mu: torch.Tensor, r: int, s1: Scalar, s2: Scalar) -> torch.Tensor:
    """sum over the r removed constants of (k_j - mu)^2, from S1 and S2."""
    if r == 0:
        return torch.zeros_like(mu)
    centre = s1 / r
    spread = s2 - s1 * centre  # sum (k_j - mean k)^2, >= 0 up to rounding
    return spread + r * (centre - mu) ** 2


def compensated_layer_norm(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    bias: Optional[torch.Tensor],
    n_total: int,
    s1: Scalar = 0.0,
    s2: Scalar = 0.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """LayerNorm over the last axis of width `n_total`, of which only the kept channels are in `x`.

    `s1`, `s2`: sum and sum of squares of the constants the removed channels held. Equal, on the kept
    channels, to `F.layer_norm` over the full width. With `n_total == x.shape[-1]` it is LayerNorm.
    """
    k = x.shape[-1]
    r = n_total - k
    if r < 0:
        raise ValueError(f"compensated_layer_norm: n_total {n_total} is smaller than the kept width {k}")
    mu = (x.sum(-1, keepdim=True) + s1) / n_total
    xc = x - mu
    var = ((xc * xc).sum(-1, keepdim=True) + _removed_sum_of_squares(mu, r, s1, s2)) / n_total
    y = xc * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def compensated_rms_norm(
    x: torch.Tensor,
    weight: Optional[torch.Tensor],
    n_total: int,
    s2: Scalar = 0.0,
    eps: Optional[float] = None,
) -> torch.Tensor:
    """RMSNorm over the last axis of width `n_total`; `x` holds the kept channels, `s2` the sum of the
    squares of the removed constants. `eps=None` takes the dtype's machine epsilon, as `F.rms_norm`."""
    k = x.shape[-1]
    if n_total < k:
        raise ValueError(f"compensated_rms_norm: n_total {n_total} is smaller than the kept width {k}")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    ms = ((x * x).sum(-1, keepdim=True) + s2) / n_total
    y = x * torch.rsqrt(ms + eps)
    if weight is not None:
        y = y * weight
    return y


def rms_norm(x: torch.Tensor, weight: Optional[torch.Tensor], eps: Optional[float] = None) -> torch.Tensor:
    """RMSNorm over the last axis: `x / sqrt(mean(x^2) + eps) * weight` (eps=None: machine epsilon)."""
    return compensated_rms_norm(x, weight, x.shape[-1], 0.0, eps)


# ---- attention with explicit heads ------------------------------------------------------------
def _offsets(sizes: Sequence[int]) -> list[int]:
    out, acc = [], 0
    for s in sizes:
        out.append(acc)
        acc += s
    return out


def _pad_index(sizes: Sequence[int], width: int, device: torch.device) -> torch.Tensor:
    """[len(sizes), width] indices into a flat axis holding the blocks `sizes` back to back followed by one
    zero column: block i position d < sizes[i] maps to offset_i + d, every other position to the zero."""
    zero = sum(sizes)
    rows = []
    for off, s in zip(_offsets(sizes), sizes):
        rows.append([off + d if d < s else zero for d in range(width)])
    return torch.tensor(rows, dtype=torch.long, device=device)


def _split_heads(t: torch.Tensor, sizes: Sequence[int], width: int) -> torch.Tensor:
    """[*B, L, sum(sizes)] -> [*B, G, L, width], each block zero-padded to `width`."""
    g = len(sizes)
    if all(s == width for s in sizes):
        return t.reshape(*t.shape[:-1], g, width).transpose(-3, -2)
    zero = t.new_zeros(t.shape[:-1] + (1,))
    ext = torch.cat([t, zero], -1)
    idx = _pad_index(sizes, width, t.device).reshape(-1)
    return ext.index_select(-1, idx).reshape(*t.shape[:-1], g, width).transpose(-3, -2)


def _apply_rope(
    t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, freq: Sequence[Sequence[int]], width: int
) -> torch.Tensor:
    """Rotate-half RoPE on padded heads [*B, G, L, width]. Head g keeps p_g = len(freq[g]) rotation
    pairs (d, p_g + d) that turn with frequency freq[g][d] (an index into the last axis of cos/sin,
    [*B or 1, L, F]). Padded positions stay zero."""
    g = len(freq)
    # per head, the frequency index of each of its padded positions and its partner position
    fidx, partner, sign = [], [], []
    for fs in freq:
        p = len(fs)
        f_row, p_row, s_row = [], [], []
        for d in range(width):
            if d < p:
                f_row.append(fs[d]), p_row.append(p + d), s_row.append(-1.0)
            elif d < 2 * p:
                f_row.append(fs[d - p]), p_row.append(d - p), s_row.append(1.0)
            else:
                f_row.append(0), p_row.append(d), s_row.append(0.0)
        fidx.append(f_row), partner.append(p_row), sign.append(s_row)
    dev = t.device
    fidx_t = torch.tensor(fidx, dtype=torch.long, device=dev).reshape(-1)
    partner_t = torch.tensor(partner, dtype=torch.long, device=dev)
    sign_t = torch.tensor(sign, dtype=t.dtype, device=dev)
    # cos/sin [*C, L, F] -> [*C, G, L, width]
    c = cos.to(t.dtype).index_select(-1, fidx_t).reshape(*cos.shape[:-1], g, width).transpose(-3, -2)
    s = sin.to(t.dtype).index_select(-1, fidx_t).reshape(*sin.shape[:-1], g, width).transpose(-3, -2)
    live = (sign_t != 0).to(t.dtype)
    c = c * live + (1 - live)  # padded positions: identity
    s = s * sign_t
    rotated = torch.gather(t, -1, partner_t.unsqueeze(-2).expand(t.shape))
    return t * c + rotated * s


def head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Optional[torch.Tensor],
    qk_dims: Sequence[int],
    v_dims: Sequence[int],
    head_group: Sequence[int],
    causal: bool = False,
    scale: Optional[float] = None,
    rope_cos: Optional[torch.Tensor] = None,
    rope_sin: Optional[torch.Tensor] = None,
    rope_freq: Optional[Sequence[int]] = None,
) -> torch.Tensor:
    """Scaled dot-product attention whose heads may have different query/key and value widths.

    q: [*B, L, sum_h qk_dims[group[h]]] (query heads back to back), k: [*B, S, sum_g qk_dims[g]],
    v: [*B, S, sum_g v_dims[g]] (one block per key/value head g); `head_group[h]` is the key/value head of
    query head h (grouped-query attention when several share one). The result is
    [*B, L, sum_h v_dims[group[h]]], query heads back to back, ready for the output projection.
    `scale` multiplies q.k (None: 1/sqrt of the common head width, only when all heads agree).
    RoPE (rotate-half convention), when `rope_cos`/`rope_sin` ([*B or 1, L, F]) are given: key/value head g
    holds qk_dims[g] / 2 rotation pairs; `rope_freq` lists, head after head, the frequency index of each pair.
    """
    G = len(qk_dims)
    if len(v_dims) != G:
        raise ValueError("head_attention: qk_dims and v_dims must list the same key/value heads")
    q_sizes = [qk_dims[g] for g in head_group]
    dq = max(qk_dims) if G else 0
    dv = max(v_dims) if G else 0
    if scale is None:
        if len(set(qk_dims)) != 1:
            raise ValueError("head_attention: heads of different widths need an explicit scale")
        scale = 1.0 / float(qk_dims[0]) ** 0.5
    qh = _split_heads(q, q_sizes, dq)  # [*B, H, L, dq]
    kh = _split_heads(k, list(qk_dims), dq)  # [*B, G, S, dq]
    vh = _split_heads(v, list(v_dims), dv)
    if rope_cos is not None:
        if rope_sin is None or rope_freq is None:
            raise ValueError("head_attention: RoPE needs rope_cos, rope_sin and rope_freq")
        pairs = [d // 2 for d in qk_dims]
        offs = _offsets(pairs)
        freq_g = [list(rope_freq[o : o + p]) for o, p in zip(offs, pairs)]
        qh = _apply_rope(qh, rope_cos, rope_sin, [freq_g[g] for g in head_group], dq)
        kh = _apply_rope(kh, rope_cos, rope_sin, freq_g, dq)
    if list(head_group) != list(range(G)):
        grp = torch.tensor(list(head_group), dtype=torch.long, device=q.device)
        kh = kh.index_select(-3, grp)
        vh = vh.index_select(-3, grp)
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, is_causal=causal, scale=scale)
    # [*B, H, L, dv] -> [*B, L, H * dv] -> keep each head's own value width
    o = o.transpose(-3, -2)
    o = o.reshape(*o.shape[:-2], o.shape[-2] * dv)
    out_sizes = [v_dims[g] for g in head_group]
    if all(s == dv for s in out_sizes):
        return o
    keep = [h * dv + d for h, s in enumerate(out_sizes) for d in range(s)]
    return o.index_select(-1, torch.tensor(keep, dtype=torch.long, device=o.device))


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables [*, L, F] for integer positions [*, L] and frequencies [F]."""
    ang = positions.to(inv_freq.dtype).unsqueeze(-1) * inv_freq
    return ang.cos(), ang.sin()
