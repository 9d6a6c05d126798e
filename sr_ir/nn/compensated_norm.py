"""CompensatedLayerNorm and CompensatedRMSNorm: norms over a residual stream some of whose channels were
removed because they held known constants.

The module keeps trainable gamma/beta over the kept channels only; the full width N is a structural
constant (like `normalized_shape` of nn.LayerNorm) and the removed constants enter through two buffers,
S1 = sum k_j and S2 = sum k_j^2. On the kept channels the output is exactly the full norm's output
(minimization.md section 3); the removed channels' own outputs are not produced, so a channel may only
be removed where that output was a constant (gamma_j = 0) folded downstream, or unused.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..errors import SrIrError
from . import functional as SF


class CompensationError(SrIrError, ValueError):
    """Inconsistent arguments to a compensated norm (indices, constants, widths)."""

IndexLike = Union[Sequence[int], torch.Tensor]


def _as_index(idx: IndexLike, n: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise CompensationError(f"{what}: channel index out of range for width {n}")
    if t.unique().numel() != t.numel():
        raise CompensationError(f"{what}: repeated channel index")
    return t


def _removed_stats(values: IndexLike | torch.Tensor, count: int, what: str) -> tuple[float, float]:
    """S1, S2 of the removed constants, summed in float64 so that the buffers carry no extra rounding."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if v.numel() != count:
        raise CompensationError(f"{what}: {count} channels removed but {v.numel()} constants given")
    if not torch.isfinite(v).all():
        raise CompensationError(f"{what}: removed constants must be finite")
    return float(v.sum()), float((v * v).sum())


def _check_extra_state(module: nn.Module, state: torch.Tensor) -> None:
    """A state dict records the widths it was saved with ([kept, n_total], int64); loading it into another
    width is an error."""
    kept, n_total = (int(v) for v in torch.as_tensor(state).reshape(-1)[:2])
    if (kept, n_total) != (module.kept, module.n_total):
        raise CompensationError(
            f"{type(module).__name__}: state dict is for kept={kept}, n_total={n_total}, "
            f"this module has kept={module.kept}, n_total={module.n_total}"
        )


class CompensatedLayerNorm(nn.Module):
    """LayerNorm over the last axis of full width `n_total`, computed on the `kept` channels present in
    the input; the removed channels held constants summing to `s1` with squares summing to `s2`."""

    def __init__(
        self,
        kept: int,
        n_total: int,
        s1: float = 0.0,
        s2: float = 0.0,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        if not 0 <= kept <= n_total:
            raise CompensationError(f"CompensatedLayerNorm: kept width {kept} must lie in [0, n_total={n_total}]")
        self.kept = int(kept)
        self.n_total = int(n_total)
        self.eps = float(eps)
        fk = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(kept, **fk))
            self.bias = nn.Parameter(torch.zeros(kept, **fk)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("s1", torch.tensor(float(s1), **fk))
        self.register_buffer("s2", torch.tensor(float(s2), **fk))

    @property
    def removed(self) -> int:
        return self.n_total - self.kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SF.compensated_layer_norm(x, self.weight, self.bias, self.n_total, self.s1, self.s2, self.eps)

    def extra_repr(self) -> str:
        return f"kept={self.kept}, n_total={self.n_total}, eps={self.eps}, affine={self.weight is not None}"

    # the full width is structural (an int, so that export sees static shapes) but travels in the state dict
    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([self.kept, self.n_total], dtype=torch.int64)

    def set_extra_state(self, state: torch.Tensor) -> None:
        _check_extra_state(self, state)

    # ---- construction from a full norm, and composition ----------------------------------------
    @classmethod
    def from_layer_norm(
        cls, ln: nn.LayerNorm, keep_idx: IndexLike, removed_values: IndexLike | torch.Tensor
    ) -> "CompensatedLayerNorm":
        """The compensated form of `ln` keeping channels `keep_idx` (in that order); every other channel is
        removed and held the constant given, in increasing channel order, by `removed_values`."""
        if len(ln.normalized_shape) != 1:
            raise CompensationError("CompensatedLayerNorm: only a LayerNorm over the last axis can be compensated")
        n = int(ln.normalized_shape[0])
        keep = _as_index(keep_idx, n, "from_layer_norm")
        s1, s2 = _removed_stats(removed_values, n - keep.numel(), "from_layer_norm")
        ref = ln.weight if ln.weight is not None else None
        out = cls(
            keep.numel(), n, s1, s2, ln.eps, ln.weight is not None, getattr(ln, "bias", None) is not None,
            device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype,
        )
        with torch.no_grad():
            if ln.weight is not None:
                out.weight.copy_(ln.weight.detach()[keep])
            if ln.bias is not None:
                out.bias.copy_(ln.bias.detach()[keep])
        return out

    def compensate(self, keep_idx: IndexLike, removed_values: IndexLike | torch.Tensor) -> "CompensatedLayerNorm":
        """Remove further channels (indices into the current kept channels) holding the given constants:
        compensation composes by adding to S1, S2 and the removed count."""
        keep = _as_index(keep_idx, self.kept, "compensate")
        d1, d2 = _removed_stats(removed_values, self.kept - keep.numel(), "compensate")
        ref = self.s1
        out = type(self)(
            keep.numel(), self.n_total, 0.0, 0.0, self.eps, self.weight is not None, self.bias is not None,
            device=ref.device, dtype=ref.dtype,
        )
        with torch.no_grad():
            # summed in float64 before storing, as in from_layer_norm
            out.s1.fill_(float(self.s1.double()) + d1)
            out.s2.fill_(float(self.s2.double()) + d2)
            if self.weight is not None:
                out.weight.copy_(self.weight.detach()[keep])
            if self.bias is not None:
                out.bias.copy_(self.bias.detach()[keep])
        return out


class CompensatedRMSNorm(nn.Module):
    """RMSNorm over the last axis of full width `n_total`, computed on the `kept` channels present in the
    input; the removed channels held constants whose squares sum to `s2`. `eps=None`: machine epsilon."""

    def __init__(
        self,
        kept: int,
        n_total: int,
        s2: float = 0.0,
        eps: Optional[float] = None,
        elementwise_affine: bool = True,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        if not 0 <= kept <= n_total:
            raise CompensationError(f"CompensatedRMSNorm: kept width {kept} must lie in [0, n_total={n_total}]")
        self.kept = int(kept)
        self.n_total = int(n_total)
        self.eps = None if eps is None else float(eps)
        fk = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(kept, **fk))
        else:
            self.register_parameter("weight", None)
        self.register_buffer("s2", torch.tensor(float(s2), **fk))

    @property
    def removed(self) -> int:
        return self.n_total - self.kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SF.compensated_rms_norm(x, self.weight, self.n_total, self.s2, self.eps)

    def extra_repr(self) -> str:
        return f"kept={self.kept}, n_total={self.n_total}, eps={self.eps}, affine={self.weight is not None}"

    # the full width is structural (an int, so that export sees static shapes) but travels in the state dict
    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([self.kept, self.n_total], dtype=torch.int64)

    def set_extra_state(self, state: torch.Tensor) -> None:
        _check_extra_state(self, state)

    @classmethod
    def from_rms_norm(
        cls, norm: nn.Module, keep_idx: IndexLike, removed_values: IndexLike | torch.Tensor
    ) -> "CompensatedRMSNorm":
        """From `nn.RMSNorm` (or any module with `weight` [N] and `eps`/`variance_epsilon`, such as the
        Llama-style RMSNorm of model libraries) keeping `keep_idx`; removed channels held `removed_values`."""
        weight = getattr(norm, "weight", None)
        shape = getattr(norm, "normalized_shape", None)
        if shape is not None and len(tuple(shape)) != 1:
            raise CompensationError("CompensatedRMSNorm: only an RMSNorm over the last axis can be compensated")
        n = int(shape[0]) if shape is not None else int(weight.shape[0])
        eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
        keep = _as_index(keep_idx, n, "from_rms_norm")
        _, s2 = _removed_stats(removed_values, n - keep.numel(), "from_rms_norm")
        out = cls(
            keep.numel(), n, s2, eps, weight is not None,
            device=None if weight is None else weight.device, dtype=None if weight is None else weight.dtype,
        )
        if weight is not None:
            with torch.no_grad():
                out.weight.copy_(weight.detach()[keep])
        return out

    def compensate(self, keep_idx: IndexLike, removed_values: IndexLike | torch.Tensor) -> "CompensatedRMSNorm":
        """Remove further channels (indices into the current kept channels) holding the given constants."""
        keep = _as_index(keep_idx, self.kept, "compensate")
        _, d2 = _removed_stats(removed_values, self.kept - keep.numel(), "compensate")
        out = type(self)(
            keep.numel(), self.n_total, 0.0, self.eps, self.weight is not None,
            device=self.s2.device, dtype=self.s2.dtype,
        )
        with torch.no_grad():
            out.s2.fill_(float(self.s2.double()) + d2)
            if self.weight is not None:
                out.weight.copy_(self.weight.detach()[keep])
        return out


class FixedCompensatedLayerNorm(CompensatedLayerNorm):
    """CompensatedLayerNorm whose compensation is part of the architecture: `n_total`, `s1` and `s2` are
    constants like `eps` (Python numbers, shown in the repr), and the state dict holds only `weight` and
    `bias`. It is the layer an emitted module holds for a `compensated_layer_norm` node (whose s1, s2 are
    attributes of the op, not tensors), computing exactly that op's torch template."""

    # no `_extra_state`: the widths are constructor arguments, as `normalized_shape` is for nn.LayerNorm
    get_extra_state = nn.Module.get_extra_state
    set_extra_state = nn.Module.set_extra_state

    def __init__(self, kept: int, n_total: int, s1: float = 0.0, s2: float = 0.0, eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__(kept, n_total, 0.0, 0.0, eps, elementwise_affine, bias, device=device, dtype=dtype)
        del self.s1, self.s2  # the buffers of the base class: here they are constants
        self.s1, self.s2 = float(s1), float(s2)

    def extra_repr(self) -> str:
        return (f"kept={self.kept}, n_total={self.n_total}, s1={self.s1!r}, s2={self.s2!r}, eps={self.eps}, "
                f"affine={self.weight is not None}")

    def compensate(self, keep_idx: IndexLike, removed_values: IndexLike | torch.Tensor) -> "FixedCompensatedLayerNorm":
        keep = _as_index(keep_idx, self.kept, "compensate")
        d1, d2 = _removed_stats(removed_values, self.kept - keep.numel(), "compensate")
        ref = self.weight
        out = type(self)(keep.numel(), self.n_total, self.s1 + d1, self.s2 + d2, self.eps, self.weight is not None,
                         self.bias is not None, device=None if ref is None else ref.device,
                         dtype=None if ref is None else ref.dtype)
        with torch.no_grad():
            if self.weight is not None:
                out.weight.copy_(self.weight.detach()[keep])
            if self.bias is not None:
                out.bias.copy_(self.bias.detach()[keep])
        return out


class FixedCompensatedRMSNorm(CompensatedRMSNorm):
    """CompensatedRMSNorm with `n_total` and `s2` constants of the architecture (state dict: `weight`
    only): the layer an emitted module holds for a `compensated_rms_norm` node."""

    get_extra_state = nn.Module.get_extra_state
    set_extra_state = nn.Module.set_extra_state

    def __init__(self, kept: int, n_total: int, s2: float = 0.0, eps: Optional[float] = None,
                 elementwise_affine: bool = True, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None):
        super().__init__(kept, n_total, 0.0, eps, elementwise_affine, device=device, dtype=dtype)
        del self.s2
        self.s2 = float(s2)

    def extra_repr(self) -> str:
        return f"kept={self.kept}, n_total={self.n_total}, s2={self.s2!r}, eps={self.eps}, affine={self.weight is not None}"

    def compensate(self, keep_idx: IndexLike, removed_values: IndexLike | torch.Tensor) -> "FixedCompensatedRMSNorm":
        keep = _as_index(keep_idx, self.kept, "compensate")
        _, d2 = _removed_stats(removed_values, self.kept - keep.numel(), "compensate")
        ref = self.weight
        out = type(self)(keep.numel(), self.n_total, self.s2 + d2, self.eps, self.weight is not None,
                         device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)
        if self.weight is not None:
            with torch.no_grad():
                out.weight.copy_(self.weight.detach()[keep])
        return out
