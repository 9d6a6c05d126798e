"""ConvNeXt (Liu et al. 2022) written out plainly: depthwise 7x7, channels-last LayerNorm, GELU MLP,
layer scale, LayerNorm + strided conv downsampling. `convnext_tiny()` is depths 3-3-9-3, widths
96-192-384-768."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW tensor, the channels-last way (permute, LN, permute)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Block(nn.Module):
    def __init__(self, dim: int, layer_scale_init: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x)
        y = y.permute(0, 2, 3, 1)
        y = self.norm(y)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        stem_stride: int = 4,
        layer_scale_init: float = 1e-6,
    ):
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(
            nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=stem_stride, stride=stem_stride), LayerNorm2d(dims[0]))
        )
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        self.stages = nn.ModuleList(
            nn.Sequential(*[Block(dims[i], layer_scale_init) for _ in range(depths[i])]) for i in range(4)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean([-2, -1])))


def convnext_tiny(in_chans: int = 3, num_classes: int = 1000, small_input: bool = False, **kw) -> ConvNeXt:
    """ConvNeXt-Tiny (28.6M parameters at 1000 classes). `small_input` uses a stride-2 stem so that a 28x28
    input keeps a spatial map through the three 2x downsamplings (28 -> 14 -> 7 -> 3 -> 1); the usual
    stride-4 stem would leave 7 -> 3 -> 1 -> 0."""
    return ConvNeXt(in_chans, num_classes, (3, 3, 9, 3), (96, 192, 384, 768), stem_stride=2 if small_input else 4, **kw)


def convnext_small_test(in_chans: int = 3, num_classes: int = 10, **kw) -> ConvNeXt:
    """A narrow ConvNeXt with every structural feature of the real one, for fast tests."""
    return ConvNeXt(in_chans, num_classes, (1, 1, 2, 1), (8, 16, 24, 32), **kw)
