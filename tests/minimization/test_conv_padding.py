"""The padded-conv trap: a constant nonzero channel read by a zero-padded kxk conv contributes less at
the borders, so it cannot fold into a plain bias. The engine keeps it; without padding it folds."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sr_ir.minimization import minimize


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


class Mobile(nn.Module):
    """pointwise -> BN -> relu -> depthwise 3x3 (pad 1) -> relu -> pointwise."""

    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 8, 1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw2 = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.pw2(torch.relu(self.dw(torch.relu(self.bn(self.pw1(x))))))


def test_depthwise_group_through_batchnorm_and_a_dead_depthwise_filter():
    torch.manual_seed(1)
    m = Mobile().double().eval()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.bias[:4] = torch.tensor([-3.0, -2.0, 2.0, 3.0])  # after relu: constants 0, 0, >0, >0 ...
        m.bn.weight[:4] = 0.0  # ... whatever the input (BN scale 0)
        m.dw.weight[6] = 0
        m.dw.bias[6] = -1.0  # depthwise output 6 is relu(-1) = 0: its whole channel goes
    res = minimize(m, (torch.randn(2, 3, 8, 8, dtype=torch.float64),))
    kept = dict(res.module.named_parameters())["dw.weight"].shape[0]
    # channels 0, 1 (zero through the padded depthwise: exact) and 6 go; 2, 3 are nonzero constants that the
    # padded depthwise turns into border-dependent maps: they stay
    assert kept == 5
    assert res.report.verification["float64"]["max_rel"] <= 1e-12
