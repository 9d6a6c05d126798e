"""LeNet-300-100: the fully-connected MNIST network of the pruning literature (784-300-100-10)."""
from __future__ import annotations

import torch
from torch import nn


class LeNet300100(nn.Module):
    def __init__(self, in_features: int = 784, hidden: tuple[int, int] = (300, 100), num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def lenet300_100(num_classes: int = 10) -> LeNet300100:
    """The bundled default network (266,610 parameters)."""
    torch.manual_seed(0)
    return LeNet300100(num_classes=num_classes)


def example_inputs(batch: int = 4) -> tuple[torch.Tensor]:
    return (torch.randn(batch, 784),)
