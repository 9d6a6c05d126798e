"""Numerical comparison of two models on the same inputs: max absolute and relative error per output.

Relative error is max|y - y'| / max|y| over each output (so a near-zero element does not blow it up),
the measure the project quotes everywhere.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class Comparison:
    max_abs: float
    max_rel: float
    worst_output: int  # index of the output with the largest relative error
    dtype: str

    def within(self, rel_tol: float) -> bool:
        return self.max_rel <= rel_tol

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _outputs(y: Any) -> list[torch.Tensor]:
    if isinstance(y, torch.Tensor):
        return [y]
    if isinstance(y, (list, tuple)):
        return [t for x in y for t in _outputs(x)]
    if isinstance(y, dict):
        return [t for x in y.values() for t in _outputs(x)]
    if hasattr(y, "to_tuple"):  # model-output dataclasses of model libraries
        return _outputs(y.to_tuple())
    raise TypeError(f"cannot compare outputs of type {type(y).__name__}")


@torch.no_grad()
def compare(reference: Callable[..., Any], candidate: Callable[..., Any], inputs: Sequence[Any]) -> Comparison:
    """Run both on `inputs` and measure the difference of every output."""
    ya, yb = _outputs(reference(*inputs)), _outputs(candidate(*inputs))
    if len(ya) != len(yb):
        raise ValueError(f"the models return {len(ya)} and {len(yb)} outputs")
    max_abs, max_rel, worst = 0.0, 0.0, 0
    for i, (a, b) in enumerate(zip(ya, yb)):
        if a.shape != b.shape:
            raise ValueError(f"output {i}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
        a64, b64 = a.double(), b.double()
        diff = (a64 - b64).abs().max().item() if a.numel() else 0.0
        scale = a64.abs().max().item() if a.numel() else 0.0
        rel = diff / scale if scale > 0 else diff
        if rel >= max_rel:
            max_rel, worst = rel, i
        max_abs = max(max_abs, diff)
    dtype = str(ya[0].dtype).replace("torch.", "") if ya else "none"
    return Comparison(max_abs, max_rel, worst, dtype)


def as_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` with floating parameters and buffers in `dtype` (the original is untouched)."""
    return copy.deepcopy(model).to(dtype)


def cast_inputs(inputs: Sequence[Any], dtype: torch.dtype) -> tuple[Any, ...]:
    return tuple(x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x in inputs)
