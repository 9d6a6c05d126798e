"""Networks and planting helpers for the minimization tests (written as a user would write them)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def prune_all(model: nn.Module, amount: float, seed: int = 0) -> nn.Module:
    """Random unstructured masks (torch.nn.utils.prune) on every conv and linear weight."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            prune.random_unstructured(m, "weight", amount)
    return model


def weight_of(m: nn.Module) -> torch.Tensor:
    """The tensor to plant zeros in: the unmasked original when pruning re-parametrizes the weight."""
    return m.weight_orig if hasattr(m, "weight_orig") else m.weight


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g))
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.randn(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g))


class Residual(nn.Module):
    """in -> stream; stream + fc2(relu(fc1(stream))) -> out. Stream channels are tied across the add."""

    def __init__(self, d_in: int = 12, d: int = 10, h: int = 16, d_out: int = 4):
        super().__init__()
        self.fc_in = nn.Linear(d_in, d)
        self.fc1 = nn.Linear(d, h)
        self.fc2 = nn.Linear(h, d)
        self.fc_out = nn.Linear(d, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc_in(x)
        z = y + self.fc2(torch.relu(self.fc1(y)))
        return self.fc_out(z)


class ConvFlat(nn.Module):
    """conv -> relu -> flatten -> linear: a dead filter becomes a constant block of flattened columns."""

    def __init__(self, c: int = 6, hw: int = 5, padding: int = 0, k: int = 3, c2: int | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 1)
        self.conv2 = nn.Conv2d(c, c2 or c, k, padding=padding)
        side = hw + 2 * padding - k + 1
        self.fc = nn.Linear((c2 or c) * side * side, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        return self.fc(torch.flatten(h, 1))


class GeluMLP(nn.Module):
    def __init__(self, sizes=(20, 24, 18, 6)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, l in enumerate(self.layers):
            x = l(x)
            if i < len(self.layers) - 1:
                x = nn.functional.gelu(x)
        return x


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
