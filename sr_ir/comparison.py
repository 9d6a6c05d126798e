"""How far apart two models' outputs are: the one measure sr-ir quotes everywhere (the engine's
verification, the CLI, the cycle). Relative error is max|y - y'| / max|y| over an output, so a near-zero
element does not blow it up; the worst output decides."""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .errors import VerificationError


@dataclass(frozen=True)
class Difference:
    max_abs: float
    max_rel: float
    worst_output: int  # index of the output with the largest relative error
    dtype: str
    position: list[int] = field(default_factory=list)  # where in that output the largest error is
    finite: bool = True  # False when the candidate has a non-finite value where the reference has none

    def within(self, rel_tol: float) -> bool:
        return self.finite and self.max_rel <= rel_tol  # NaN fails too

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flat_outputs(y: Any) -> list[torch.Tensor]:
    """The tensors of a model's output, in order (tuples, lists, dicts, model-output dataclasses)."""
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (list, tuple)):
        return [t for x in y for t in flat_outputs(x)]
    if isinstance(y, dict):
        return [t for x in y.values() for t in flat_outputs(x)]
    if hasattr(y, "to_tuple"):
        return flat_outputs(y.to_tuple())
    return []


def difference(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> Difference:
    """The difference of two output lists; VerificationError when their number or shapes differ."""
    if len(reference) != len(candidate):
        raise VerificationError(f"{len(reference)} outputs before, {len(candidate)} after")
    max_abs, max_rel, worst, pos, finite = 0.0, 0.0, 0, [], True
    for i, (a, b) in enumerate(zip(reference, candidate)):
        if a.shape != b.shape:
            raise VerificationError(f"output {i} has shape {tuple(a.shape)} before, {tuple(b.shape)} after")
        if not a.numel():
            continue
        a64, b64 = a.detach().double(), b.detach().double()
        same = (a64 == b64) | (a64.isnan() & b64.isnan())  # equal infinities and NaN where both have one
        d = torch.where(same, torch.zeros_like(a64), (a64 - b64).abs())
        err = float(d.max())
        scale = float(torch.nan_to_num(a64.abs(), nan=0.0, posinf=0.0).max())
        rel = err / scale if scale > 0 else err
        if bool(torch.isfinite(a64).all()) and not bool(torch.isfinite(b64).all()):
            finite = False
        if rel >= max_rel or rel != rel:
            max_rel, worst = rel, i
            pos = [int(j) for j in torch.unravel_index(torch.nan_to_num(d, nan=float("inf")).argmax(), d.shape)]
        max_abs = err if err != err or max_abs != max_abs else max(max_abs, err)  # a NaN stays NaN
    dtype = str(reference[0].dtype).replace("torch.", "") if reference else "none"
    return Difference(max_abs, max_rel, worst, dtype, pos, finite)


@torch.no_grad()
def compare(reference: Callable[..., Any], candidate: Callable[..., Any], inputs: Sequence[Any]) -> Difference:
    """Run both on `inputs` and measure the difference of every output."""
    return difference(flat_outputs(reference(*inputs)), flat_outputs(candidate(*inputs)))


def as_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` with floating parameters and buffers in `dtype` (the original is untouched)."""
    return copy.deepcopy(model).to(dtype)


def cast_inputs(inputs: Sequence[Any], dtype: torch.dtype) -> tuple[Any, ...]:
    return tuple(x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)


def random_like(example: Sequence[Any], seed: int, batch: int | None = None) -> list[Any]:
    """Random inputs shaped like `example`: floats normal at the example's scale, integers within the
    example's range (indices stay valid)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for x in example:
        if not isinstance(x, torch.Tensor):
            out.append(x)
            continue
        shape = list(x.shape)
        if batch is not None and shape:
            shape[0] = batch
        if x.is_floating_point():
            scale = float(x.detach().abs().max()) if x.numel() else 1.0
            out.append(torch.randn(shape, generator=g, dtype=x.dtype) * max(scale / 3, 1.0))
        else:
            hi = int(x.max()) + 1 if x.numel() else 2
            out.append(torch.randint(0, max(hi, 1), shape, generator=g, dtype=x.dtype))
    return out


__all__ = ["Difference", "as_dtype", "cast_inputs", "compare", "difference", "flat_outputs", "random_like"]
