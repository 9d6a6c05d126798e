"""A small exact minimizer for ReLU MLP chains: a test double with sr_ir.minimize's interface.

It lets the cycle's tests run with a minimizer whose behaviour they control. A hidden unit goes
when its input row is all zero (its output is the constant relu(b), folded into the next bias) or
its output column in the next layer is all zero (unused); an input feature goes when its column in
the first layer is all zero (replaced by a gather on the input, the interface keeps its width).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sr_ir.errors import VerificationError


class MinimizedMLP(nn.Module):
    def __init__(self, in_features: int, index: torch.Tensor | None, weights, biases):
        super().__init__()
        self.in_features = in_features
        if index is not None:
            self.register_buffer("input_index", index.clone())
        else:
            self.input_index = None
        self.layers = nn.ModuleList()
        for w, b in zip(weights, biases):
            lin = nn.Linear(w.shape[1], w.shape[0], dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            self.layers.append(lin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        if self.input_index is not None:
            x = x.index_select(1, self.input_index)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


@dataclass
class Report:
    params_before: int
    params_after: int
    removed_channels: dict[str, int] = field(default_factory=dict)
    max_abs_error: float = 0.0


@dataclass
class Minimized:
    module: nn.Module
    report: Report
    program: object = None


def _chain(model: nn.Module):
    if isinstance(model, MinimizedMLP):
        idx = model.input_index
        return model.in_features, idx, list(model.layers)
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return layers[0].in_features, None, layers


@torch.no_grad()
def mlp_minimize(model: nn.Module, example_inputs: tuple, *, verify: bool = True) -> Minimized:
    in_features, index, layers = _chain(model)
    W = [l.weight.detach().clone() for l in layers]
    B = [l.bias.detach().clone() for l in layers]
    idx = index.clone() if index is not None else torch.arange(in_features)
    removed = {f"layers.{i}": 0 for i in range(len(W) - 1)}
    removed["input"] = 0
    changed = True
    while changed:
        changed = False
        for i in range(len(W) - 1):
            dead_row = (W[i] == 0).all(dim=1)
            unused = (W[i + 1] == 0).all(dim=0)
            drop = dead_row | unused
            if not drop.any():
                continue
            const = torch.relu(B[i]) * (dead_row & ~unused)
            B[i + 1] = B[i + 1] + W[i + 1] @ const  # fold the constants of dead units downstream
            keep = ~drop
            W[i], B[i] = W[i][keep], B[i][keep]
            W[i + 1] = W[i + 1][:, keep]
            removed[f"layers.{i}"] += int(drop.sum())
            changed = True
        unused_in = (W[0] == 0).all(dim=0)
        if unused_in.any():
            W[0] = W[0][:, ~unused_in]
            idx = idx[~unused_in]
            removed["input"] += int(unused_in.sum())
            changed = True
    full = idx.numel() == in_features and bool((idx == torch.arange(in_features)).all())
    small = MinimizedMLP(in_features, None if full else idx, W, B).eval()
    before = sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())
    after = sum(p.numel() for p in small.parameters()) + sum(b.numel() for b in small.buffers())
    err = 0.0
    if verify:
        model.eval()
        for x in example_inputs[:1]:
            ya, yb = model(x), small(x)
            err = float((ya - yb).abs().max())
            if err > 1e-4 * max(float(ya.abs().max()), 1.0):
                raise VerificationError(f"mlp minimizer mismatch {err}")
    return Minimized(small, Report(before, after, removed, err))
