"""Functional forms of the exact norms (and `rms_norm`, `cast`) that emitted code uses.

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
    "gru",
    "lstm",
    "rms_norm",
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
    k = x.shape[-1]
    r = n_total - k
    if r < 0:
        raise ValueError(f"compensated_layer_norm: n_total {n_total} is smaller than the kept width {k}")
    if k == 0:
        return x
    # one fused pass for the kept channels' own statistics; sum_K (x - mu)^2 = k var_K + k (m_K - mu)^2
    var_k, mean_k = torch.var_mean(x, -1, keepdim=True, correction=0)
    mu = (k * mean_k + s1) / n_total
    ss = k * var_k + k * (mean_k - mu) ** 2
    if r > 0:
        # sum_R (k_j - mu)^2 as spread about the constants' own mean plus r times the shift
        centre = s1 / r
        ss = ss + (s2 - s1 * centre) + r * (centre - mu) ** 2
    else:
        # no removed channel: s1 = s2 = 0 in any real use; this is the op's stated variance
        # (s2 - 2 mu s1 + r mu^2) all the same, so emitted code and proof agree for every attribute
        ss = ss + s2 - 2 * mu * s1
    inv = torch.rsqrt(ss / n_total + eps)
    y = (x - mu) * inv  # not x * inv - mu * inv: a mean far from zero would cancel
    if weight is not None and bias is not None:
        return torch.addcmul(bias, y, weight)
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


def cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """`x` converted to the IR dtype named `dtype` (f16, bf16, f32, f64, i8, i16, i32, i64, u8, bool)."""
    table = {
        "f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64,
        "i8": torch.int8, "i16": torch.int16, "i32": torch.int32, "i64": torch.int64,
        "u8": torch.uint8, "bool": torch.bool,
    }
    return x.to(table[dtype])


def lstm(x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: "torch.Tensor | None" = None,
         bias_hh: "torch.Tensor | None" = None, h0: "torch.Tensor | None" = None,
         c0: "torch.Tensor | None" = None) -> torch.Tensor:
    """One batch-first unidirectional LSTM layer (nn.LSTM's gate order i, f, g, o), weights held per
    gate ([4, m, n], [4, m, m], biases [4, m]): the output sequence [b, t, m]. An absent initial state
    is zeros, an absent bias zeros (both absent: no bias)."""
    m = weight_hh.shape[1]
    weight_ih, weight_hh = weight_ih.flatten(0, 1), weight_hh.flatten(0, 1)
    bias_ih = None if bias_ih is None else bias_ih.flatten()
    bias_hh = None if bias_hh is None else bias_hh.flatten()
    zero = x.new_zeros(1, x.shape[0], m)
    hx = [zero if h0 is None else h0.unsqueeze(0), zero if c0 is None else c0.unsqueeze(0)]
    params = [weight_ih, weight_hh]
    if bias_ih is not None or bias_hh is not None:
        params += [x.new_zeros(weight_ih.shape[0]) if bias_ih is None else bias_ih,
                   x.new_zeros(weight_hh.shape[0]) if bias_hh is None else bias_hh]
    return torch.lstm(x, hx, params, len(params) == 4, 1, 0.0, False, False, True)[0]


def gru(x: torch.Tensor, weight_ih: torch.Tensor, weight_hh: torch.Tensor, bias_ih: "torch.Tensor | None" = None,
        bias_hh: "torch.Tensor | None" = None, h0: "torch.Tensor | None" = None) -> torch.Tensor:
    """One batch-first unidirectional GRU layer (nn.GRU's gate order r, z, n), weights held per gate
    ([3, m, n], [3, m, m], biases [3, m]): the output sequence [b, t, m]. An absent initial state is
    zeros, an absent bias zeros (both absent: no bias)."""
    m = weight_hh.shape[1]
    weight_ih, weight_hh = weight_ih.flatten(0, 1), weight_hh.flatten(0, 1)
    bias_ih = None if bias_ih is None else bias_ih.flatten()
    bias_hh = None if bias_hh is None else bias_hh.flatten()
    hx = x.new_zeros(1, x.shape[0], m) if h0 is None else h0.unsqueeze(0)
    params = [weight_ih, weight_hh]
    if bias_ih is not None or bias_hh is not None:
        params += [x.new_zeros(weight_ih.shape[0]) if bias_ih is None else bias_ih,
                   x.new_zeros(weight_hh.shape[0]) if bias_hh is None else bias_hh]
    return torch.gru(x, hx, params, len(params) == 4, 1, 0.0, False, False, True)[0]
