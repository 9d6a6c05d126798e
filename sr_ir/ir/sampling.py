"""Random inputs that fit a program's input types, for checks that have no example inputs."""
from __future__ import annotations

import torch

from .program import ParamRef, Program, ValueRef
from .types import TensorType


def sample_inputs(program: Program, batch: int = 2, dtype: torch.dtype | None = None, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs matching the program's input types (symbolic dims set to `batch`). `dtype`
    replaces the dtype of floating inputs; integer inputs are drawn as valid indices."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, t in program.inputs:
        shape = [d if isinstance(d, int) else int(d.subs({s: batch for s in d.free_symbols})) for d in t.shape]
        dt = dtype if (dtype is not None and t.torch_dtype.is_floating_point) else t.torch_dtype
        if dt.is_floating_point:
            out.append(torch.randn(shape, generator=g, dtype=dt))
        elif dt == torch.bool:
            out.append(torch.rand(shape, generator=g) < 0.5)
        else:
            out.append(torch.randint(0, index_bound(program, name), shape, generator=g, dtype=dt))
    return tuple(out)


def index_bound(program: Program, name: str) -> int:
    """Integer inputs are indices (token ids): keep them below every static size of the parameters
    read beside them (an embedding table's rows, a gathered axis), whatever the op."""
    sizes = [
        int(d)
        for node in program.nodes
        if any(isinstance(o, ValueRef) and o.name == name for o in node.operands)
        for o in node.operands
        if isinstance(o, ParamRef) and o.name in program.params
        for d in program.params[o.name].shape
        if isinstance(d, int) and d > 0
    ]
    return min(sizes) if sizes else 2


__all__ = ["index_bound", "sample_inputs"]
