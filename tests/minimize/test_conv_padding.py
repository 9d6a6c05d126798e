"""The padded-conv trap: a constant nonzero channel read by a zero-padded kxk conv contributes less at
the borders, so it cannot fold into a plain bias. The engine keeps it; without padding it folds."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sr_ir.minimize import minimize


class TwoConv(nn.Module):
    def __init__(self, padding: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=padding)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def _planted(padding: int) -> TwoConv:
    torch.manual_seed(0)
    m = TwoConv(padding).double()
    with torch.no_grad():
        m.conv1.weight[0] = 0
        m.conv1.bias[0] = 0.5  # channel 0: constant relu(0.5) = 0.5, nonzero
        m.conv1.weight[1] = 0
        m.conv1.bias[1] = -0.5  # channel 1: constant relu(-0.5) = 0
    return m


def test_padded_conv_keeps_a_nonzero_constant_channel_and_drops_a_zero_one():
    m = _planted(padding=1)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    res = minimize(m, (x,))
    w2 = dict(res.module.named_parameters())["conv2.weight"]
    assert w2.shape[1] == 5  # channel 1 (zero) dropped, channel 0 (0.5) kept
    assert res.report.verification["float64"]["max_rel"] <= 1e-12


def test_folding_into_a_plain_bias_would_be_wrong_with_padding():
    m = _planted(padding=1)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        w2, b2 = m.conv2.weight, m.conv2.bias
        naive_bias = b2 + 0.5 * w2[:, 0].sum((1, 2))  # the fold a padding-blind tool would do
        h = torch.relu(m.conv1(x))[:, 1:]
        y_naive = F.conv2d(h, w2[:, 1:], naive_bias, padding=1)
    err = (y - y_naive).abs()
    assert err[..., 1:-1, 1:-1].max() < 1e-12  # exact in the interior ...
    assert err.max() > 1e-2  # ... wrong at the borders


def test_unpadded_conv_folds_the_constant_into_its_bias():
    m = _planted(padding=0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    res = minimize(m, (x,))
    w2 = dict(res.module.named_parameters())["conv2.weight"]
    assert w2.shape[1] == 4
    assert res.report.verification["float64"]["max_rel"] <= 1e-12
    assert any("conv2.bias" in g["folded_into"] for g in res.report.groups)
