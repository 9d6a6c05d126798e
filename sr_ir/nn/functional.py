"""Functional forms of the exact norms and of explicit-heads attention.

This module imports nothing but torch: the PyTorch emitter copies each function a program uses into the
generated source (as `P.<name>`), so every public function here is self-contained (torch and F only, no
module-level helpers, annotations as strings) and runs under torch.export, torch.compile and ONNX export.

Compensated norms (minimization.md section 3). A norm over N channels whose channels R (r of them)
hold known constants k_j is evaluated on the kept channels K only, with S1 = sum k_j and
S2 = sum k_j^2 standing in for the removed channels:

    mu  = (sum_K x_i + S1) / N
    var = (sum_K (x_i - mu)^2 + sum_R (k_j - mu)^2) / N
    sum_R (k_j - mu)^2 = (S2 - S1^2 / r) + r (S1 / r - mu)^2

The last line is the same number as `S2 - 2 mu S1 + r mu^2` but is a sum of two non-negative terms,
so it does not cancel catastrophically when the constants are large beside their spread.
"""
import torch
import torch.nn.functional as F

__all__ = [
    "compensated_layer_norm",
    "compensated_rms_norm",
    "rms_norm",
    "head_attention",
    "rope_tables",
]


def compensated_layer_norm(
    x: torch.Tensor,
    weight: "torch.Tensor | None",
    bias: "torch.Tensor | None",
    n_total: int,
    s1: "float | torch.Tensor" = 0.0,
    s2: "float | torch.Tensor" = 0.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """LayerNorm over the last axis of width `n_total`, of which only the kept channels are in `x`.

    `s1`, `s2`: sum and sum of squares of the constants the removed channels held. Equal, on the kept
    channels, to `F.layer_norm` over the full width. With `n_total == x.shape[-1]` it is LayerNorm.
    """
    r = n_total - x.shape[-1]
    if r < 0:
        raise ValueError(f"compensated_layer_norm: n_total {n_total} is smaller than the kept width {x.shape[-1]}")
    mu = (x.sum(-1, keepdim=True) + s1) / n_total
    xc = x - mu
    ss = (xc * xc).sum(-1, keepdim=True)
    if r > 0:
        # sum_R (k_j - mu)^2 as spread about the constants' own mean plus r times the shift
        centre = s1 / r
        ss = ss + (s2 - s1 * centre) + r * (centre - mu) ** 2
    else:
        # no removed channel: s1 = s2 = 0 in any real use; this is the op's stated variance
        # (s2 - 2 mu s1 + r mu^2) all the same, so emitted code and proof agree for every attribute
        ss = ss + s2 - 2 * mu * s1
    y = xc * torch.rsqrt(ss / n_total + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def compensated_rms_norm(
    x: torch.Tensor,
    weight: "torch.Tensor | None",
    n_total: int,
    s2: "float | torch.Tensor" = 0.0,
    eps: "float | None" = None,
) -> torch.Tensor:
    """RMSNorm over the last axis of width `n_total`; `x` holds the kept channels, `s2` the sum of the
    squares of the removed constants. `eps=None` takes the dtype's machine epsilon, as `F.rms_norm`."""
    if n_total < x.shape[-1]:
        raise ValueError(f"compensated_rms_norm: n_total {n_total} is smaller than the kept width {x.shape[-1]}")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    y = x * torch.rsqrt(((x * x).sum(-1, keepdim=True) + s2) / n_total + eps)
    if weight is not None:
        y = y * weight
    return y


def rms_norm(x: torch.Tensor, weight: "torch.Tensor | None", eps: "float | None" = None) -> torch.Tensor:
    """RMSNorm over the last axis: `x / sqrt(mean(x^2) + eps) * weight` (eps=None: machine epsilon)."""
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    y = x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight
    return y


# ---- attention with explicit heads ------------------------------------------------------------
def head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: "torch.Tensor | None",
    qk_dims: "list[int]",
    v_dims: "list[int]",
    head_group: "list[int]",
    causal: bool = False,
    scale: "float | None" = None,
    rope_cos: "torch.Tensor | None" = None,
    rope_sin: "torch.Tensor | None" = None,
    rope_freq: "list[int] | None" = None,
) -> torch.Tensor:
    """Scaled dot-product attention whose heads may have different query/key and value widths.

    k: [*B, S, sum_g qk_dims[g]] and v: [*B, S, sum_g v_dims[g]] hold one block per key/value head g;
    q: [*B, L, sum_h qk_dims[head_group[h]]] one block per query head h, whose key/value head is
    head_group[h] (grouped-query attention when several share one). The result is
    [*B, L, sum_h v_dims[head_group[h]]], query heads back to back, ready for the output projection.
    `scale` multiplies q.k (None: 1/sqrt of the common head width, only when all heads agree).
    `mask`: boolean (True = attend) or additive, broadcastable to [*B, H, L, S].
    RoPE, rotate-half convention, when `rope_cos`/`rope_sin` ([*B or 1, L, F]) are given: key/value head g
    holds qk_dims[g] / 2 rotation pairs (d, p + d); `rope_freq` lists, head after head, the index into the
    tables' last axis of each pair's frequency.
    Heads of unequal width are zero-padded to the widest (zero query/key columns add nothing to a score,
    zero value columns are dropped again), so the whole computation is one batched attention call.
    """
    n_kv = len(qk_dims)
    if len(v_dims) != n_kv:
        raise ValueError("head_attention: qk_dims and v_dims must list the same key/value heads")
    if any(g < 0 or g >= n_kv for g in head_group):
        raise ValueError("head_attention: head_group names a key/value head that does not exist")
    dq = max(qk_dims)
    dv = max(v_dims)
    if scale is None:
        if len(set(qk_dims)) != 1:
            raise ValueError("head_attention: heads of different widths need an explicit scale")
        scale = 1.0 / float(qk_dims[0]) ** 0.5

    def split(t: torch.Tensor, sizes: "list[int]", width: int) -> torch.Tensor:
        # [*B, L, sum(sizes)] -> [*B, G, L, width], block i zero-padded to `width`
        g = len(sizes)
        if all(sz == width for sz in sizes):
            return t.reshape(t.shape[:-1] + (g, width)).transpose(-3, -2)
        zero_col = sum(sizes)
        idx, off = [], 0
        for sz in sizes:
            idx.extend(off + d if d < sz else zero_col for d in range(width))
            off += sz
        ext = torch.cat([t, t.new_zeros(t.shape[:-1] + (1,))], -1)
        sel = ext.index_select(-1, torch.tensor(idx, dtype=torch.long, device=t.device))
        return sel.reshape(t.shape[:-1] + (g, width)).transpose(-3, -2)

    def rope(t: torch.Tensor, freqs: "list[list[int]]") -> torch.Tensor:
        # t: [*B, G, L, width]; head g rotates pairs (d, p_g + d) by frequency freqs[g][d]
        g, width = len(freqs), t.shape[-1]
        fidx, partner, sign = [], [], []
        for fs in freqs:
            p = len(fs)
            for d in range(width):
                if d < p:
                    fidx.append(fs[d]), partner.append(p + d), sign.append(-1.0)
                elif d < 2 * p:
                    fidx.append(fs[d - p]), partner.append(d - p), sign.append(1.0)
                else:  # padding: identity on a zero column
                    fidx.append(0), partner.append(d), sign.append(0.0)
        dev = t.device
        fi = torch.tensor(fidx, dtype=torch.long, device=dev)
        sg = torch.tensor(sign, dtype=t.dtype, device=dev).reshape(g, 1, width)
        pt = torch.tensor(partner, dtype=torch.long, device=dev).reshape(g, 1, width)
        c = rope_cos.to(t.dtype).index_select(-1, fi)
        sn = rope_sin.to(t.dtype).index_select(-1, fi)
        c = c.reshape(c.shape[:-1] + (g, width)).transpose(-3, -2)  # [*C, G, L, width]
        sn = sn.reshape(sn.shape[:-1] + (g, width)).transpose(-3, -2)
        live = (sg != 0).to(t.dtype)
        c = c * live + (1 - live)
        rotated = torch.gather(t, -1, pt.expand(t.shape))
        return t * c + rotated * (sn * sg)

    q_sizes = [qk_dims[g] for g in head_group]
    qh = split(q, q_sizes, dq)  # [*B, H, L, dq]
    kh = split(k, list(qk_dims), dq)  # [*B, G, S, dq]
    vh = split(v, list(v_dims), dv)  # [*B, G, S, dv]
    if rope_cos is not None:
        if rope_sin is None or rope_freq is None:
            raise ValueError("head_attention: RoPE needs rope_cos, rope_sin and rope_freq")
        if any(d % 2 for d in qk_dims) or len(rope_freq) * 2 != sum(qk_dims):
            raise ValueError("head_attention: RoPE heads need even widths and one frequency per rotation pair")
        per_kv, off = [], 0
        for d in qk_dims:
            per_kv.append(list(rope_freq[off : off + d // 2]))
            off += d // 2
        qh = rope(qh, [per_kv[g] for g in head_group])
        kh = rope(kh, per_kv)
    if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # an additive mask follows the query's dtype, as nn.MultiheadAttention's does
    if list(head_group) != list(range(n_kv)):
        grp = torch.tensor(list(head_group), dtype=torch.long, device=q.device)
        kh = kh.index_select(-3, grp)
        vh = vh.index_select(-3, grp)
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, is_causal=causal, scale=scale)
    o = o.transpose(-3, -2)  # [*B, L, H, dv]
    o = o.reshape(o.shape[:-2] + (o.shape[-2] * dv,))
    out_sizes = [v_dims[g] for g in head_group]
    if all(sz == dv for sz in out_sizes):
        return o
    keep = [h * dv + d for h, sz in enumerate(out_sizes) for d in range(sz)]
    return o.index_select(-1, torch.tensor(keep, dtype=torch.long, device=o.device))


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
    """cos and sin tables [*, L, F] for integer positions [*, L] and frequencies [F]."""
    ang = positions.to(inv_freq.dtype).unsqueeze(-1) * inv_freq
    return ang.cos(), ang.sin()


def cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """`x` converted to the IR dtype named `dtype` (f16, bf16, f32, f64, i8, i16, i32, i64, u8, bool)."""
    table = {
        "f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64,
        "i8": torch.int8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64,
        "u8": torch.uint8, "bool": torch.bool,
    }
    return x.to(table[dtype])
