"""Small convolutional networks: a BatchNorm + max-pool CNN and a VGG-style net with padded 3x3 convs."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, in_chans: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, width, 5)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * width * 6 * 6, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [N, C, 28, 28]
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))  # 24 -> 12
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))  # 12 -> 6
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


class VGG(nn.Module):
    """conv3x3(pad 1)-BN-ReLU blocks with max pooling, then a global average and a classifier."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10, cfg: Sequence[int | str] = (16, 16, "M", 32, 32, "M", 64)):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(c, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.mean(dim=(2, 3)))
