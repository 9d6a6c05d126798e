"""Helper functions for emitted PyTorch code.

The emitter copies the functions a program needs into the generated source as static methods of a
class `P`, so that a generated file stands alone (imports torch only) and works under torch.export
and torch.compile. Keep each function self-contained: only `torch` and `F` (torch.nn.functional).
"""
import torch
import torch.nn.functional as F


def slice_dim(x: torch.Tensor, dim: int, start: int, end: int, step: int) -> torch.Tensor:
    idx = [slice(None)] * x.dim()
    idx[dim] = slice(start, end, step)
    return x[tuple(idx)]


def layer_norm_channels(x: torch.Tensor, weight, bias, eps: float) -> torch.Tensor:
    # LayerNorm over axis 1 (channels-first), computed the channels-last way so that it matches
    # permute -> F.layer_norm -> permute bit for bit.
    perm = [0, *range(2, x.dim()), 1]
    inv = [0, x.dim() - 1, *range(1, x.dim() - 1)]
    y = F.layer_norm(x.permute(perm), (x.shape[1],), weight, bias, eps)
    return y.permute(inv)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # rotate-half rotary embedding, in the order of operations model libraries use
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, causal: bool, scale) -> torch.Tensor:
    """F.scaled_dot_product_attention; an additive mask follows the query's dtype (a module converted
    to another dtype after emission keeps its masks' constants in the dtype they were built in)."""
    if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)
    if q.dim() == 3 and k.dim() == 3 and v.dim() == 3:
        # one head as [b, l, d]: torch's fused CPU kernels take [b, h, l, d] only (the 3-d call falls
        # back to the unfused math path, ~2.6x slower), so run it as one head of four dims
        if mask is not None and mask.dim() >= 3:
            mask = mask.unsqueeze(-3)
        y = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), attn_mask=mask,
                                           is_causal=causal, scale=scale)
        return y.squeeze(1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
