"""Channels read through a flatten (conv -> flatten -> linear): a dead conv channel takes its block of
H*W columns of the classifier with it, through the certified `channels.reshape.flatten` rule; and
channels of one concat operand leave at their offset (`channels.concat.drop_channel*`)."""
from __future__ import annotations

import pytest
import torch


from sr_ir.frontend import lower
from sr_ir.lang.loader import default_rules
from sr_ir.minimization import RuleBook, UncertifiedRuleError, minimize, minimize_program
from sr_ir.rewrite.rulebook import default_certifier
from sr_ir.models.cnn import SmallCNN
from sr_ir.prover.certificates import status

W = 4  # SmallCNN width: conv1 1->4 (5x5), conv2 4->8 (3x3, padding 1), fc1 8*6*6 -> 64, fc2 64 -> 10
DEAD2 = [1, 5]  # conv2 filters planted dead: constant channels, folded into fc1's bias
DEAD1 = [0]  # conv1 filter planted dead with a negative BN output: ReLU makes it 0, conv2 drops the column


def _planted(dtype: torch.dtype = torch.float64) -> SmallCNN:
    torch.manual_seed(0)
    m = SmallCNN(width=W).to(dtype).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (m.bn1, m.bn2):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=g, dtype=dtype) * 0.1)
            bn.running_var.copy_(torch.rand(n, generator=g, dtype=dtype) + 0.5)
            bn.weight.copy_(torch.randn(n, generator=g, dtype=dtype))
            bn.bias.copy_(torch.randn(n, generator=g, dtype=dtype) * 0.1)
        for c in DEAD1:
            m.conv1.weight[c] = 0
            m.conv1.bias[c] = 0.0
            m.bn1.running_mean[c] = 0.0
            m.bn1.bias[c] = -1.0  # bn1 output -1 everywhere -> relu 0
        for c in DEAD2:
            m.conv2.weight[c] = 0
            m.conv2.bias[c] = 0.0
            m.bn2.running_mean[c] = -0.5
            m.bn2.weight[c] = 1.0
            m.bn2.bias[c] = 0.25  # a positive constant after relu and max-pool: folded, not dropped
    return m


def _expected_params() -> int:
    c1, c2, hw = 2 * W - W - len(DEAD1), 2 * W - len(DEAD2), 6 * 6
    conv1 = c1 * 1 * 5 * 5 + c1
    conv2 = c2 * c1 * 3 * 3 + c2
    fc1 = 64 * c2 * hw + 64
    fc2 = 64 * 10 + 10
    return conv1 + conv2 + fc1 + fc2


def test_flatten_rule_is_certified():
    rs = default_rules()
    for name in ("channels.reshape.flatten", "channels.reshape.flatten1d", "channels.reshape.unflatten"):
        assert status(rs.rule(name), rs) == "current", name


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_small_cnn_dead_conv_channels_take_their_flatten_blocks(dtype, tol):
    m = _planted(dtype)
    x = torch.randn(3, 1, 28, 28, dtype=dtype)
    res = minimize(m, (x,), strict=True)
    p = res.program
    assert "channels.reshape.flatten" in res.report.rules_used
    assert not res.report.refused_rules
    assert tuple(p.params["conv2.weight"].shape) == (2 * W - len(DEAD2), W - len(DEAD1), 3, 3)
    # fc1 loses exactly the 6*6-column blocks of the dead conv2 channels
    assert tuple(p.params["fc1.weight"].shape) == (64, (2 * W - len(DEAD2)) * 36)
    assert p.param_count() == _expected_params()
    keep = [c for c in range(2 * W) if c not in DEAD2]
    cols = torch.cat([torch.arange(c * 36, (c + 1) * 36) for c in keep])
    assert torch.equal(p.weights["fc1.weight"].to(dtype), m.fc1.weight[:, cols])
    # measured error of the emitted module against the masked model, in the model's dtype
    with torch.no_grad():
        for xi in (x, torch.randn(5, 1, 28, 28, dtype=dtype)):
            y0, y1 = m(xi), res.module(xi)
            assert float((y0 - y1).abs().max() / y0.abs().max()) <= tol
    v = res.report.to_dict()["verification"]
    assert v["float64"]["max_rel"] <= (1e-10 if dtype == torch.float64 else 1e-5)
    assert v["float32"]["max_rel"] <= 1e-5


def _refusing_flatten():
    base = default_certifier()

    def certify(rule, ruleset):
        if rule.name == "channels.reshape.flatten":
            return "missing: certificate withheld by the test"
        return base(rule, ruleset)

    return certify


def test_flatten_is_refused_without_its_certificate():
    m = _planted()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    rs = default_rules()
    p = lower(m, (x,), rules=rs)
    q, report = minimize_program(p, rs, book=RuleBook(rs, certify=_refusing_flatten()))
    assert "channels.reshape.flatten" in report.refused_rules
    assert "channels.reshape.flatten" not in report.rules_used
    # the flatten pins its channels: conv2 and fc1 keep every channel and column
    assert tuple(q.params["fc1.weight"].shape) == (64, 2 * W * 36)
    assert q.params["conv2.weight"].shape[0] == 2 * W
    with pytest.raises(UncertifiedRuleError, match="channels.reshape.flatten"):
        minimize_program(p, rs, book=RuleBook(rs, certify=_refusing_flatten(), strict=True))


class _Unflat(torch.nn.Module):
    """linear -> unflatten to [N, 4, 3, 3] -> 1x1 conv -> flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(10, 4 * 3 * 3)
        self.conv = torch.nn.Conv2d(4, 5, 1)
        self.out = torch.nn.Linear(5 * 9, 2)

    def forward(self, x):
        z = torch.relu(self.fc(x)).unflatten(1, (4, 3, 3))
        return self.out(torch.flatten(self.conv(z), 1))


def test_unflatten_unused_channel_takes_its_block_of_rows():
    torch.manual_seed(0)
    m = _Unflat().double()
    with torch.no_grad():
        m.conv.weight[:, 2] = 0  # conv input channel 2 unread: fc rows 18..26 (its 3x3 block) go
        m.fc.weight[9:18] = 0  # channel 1 dead but not uniform over its block (bias varies): kept
        m.fc.bias[9:18] = torch.linspace(-1, 1, 9, dtype=torch.float64)
    x = torch.randn(2, 10, dtype=torch.float64)
    res = minimize(m, (x,), strict=True)
    assert "channels.reshape.unflatten" in res.report.rules_used
    assert tuple(res.program.params["fc.weight"].shape) == (27, 10)
    assert tuple(res.program.params["conv.weight"].shape) == (5, 3, 1, 1)
    keep = [r for r in range(36) if not 18 <= r < 27]
    assert torch.equal(res.program.weights["fc.weight"], m.fc.weight[keep])
    with torch.no_grad():
        y0, y1 = m(x), res.module(x)
    assert float((y0 - y1).abs().max() / y0.abs().max()) <= 1e-10


class _CatCNN(torch.nn.Module):
    """Two conv branches concatenated on channels, relu, flatten, linear (a SmallCNN-style head)."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 4, 1)
        self.b = torch.nn.Conv2d(3, 5, 3, padding=1)
        self.fc = torch.nn.Linear(9 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(torch.cat([self.a(x), self.b(x)], 1)), 1))


class _CatMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(6, 5), torch.nn.Linear(6, 4), torch.nn.Linear(6, 3)
        self.out = torch.nn.Linear(12, 2)

    def forward(self, x):
        return self.out(torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x)), torch.tanh(self.c(x))], 1))


def test_concat_rules_are_certified():
    rs = default_rules()
    for name in ("channels.concat.drop_channel", "channels.concat.drop_channel_maps",
                 "channels.concat.drop_channel_last"):
        assert status(rs.rule(name), rs) == "current", name


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_concat_then_flatten_drops_one_operands_channels_at_their_offset(dtype, tol):
    torch.manual_seed(0)
    m = _CatCNN().to(dtype)
    with torch.no_grad():
        m.a.weight[1] = 0  # operand 0, channel 1: constant 0.5 -> its 16 columns fold into fc.bias
        m.a.bias[1] = 0.5
        m.b.weight[3] = 0  # operand 1, channel 3 (channel 4 + 3 = 7 of the concat): relu(-0.2) = 0
        m.b.bias[3] = -0.2
    x = torch.randn(2, 3, 4, 4, dtype=dtype)
    res = minimize(m, (x,), strict=True)
    p = res.program
    assert {"channels.concat.drop_channel_maps", "channels.reshape.flatten"} <= set(res.report.rules_used)
    assert tuple(p.params["a.weight"].shape) == (3, 3, 1, 1) and tuple(p.params["b.weight"].shape) == (4, 3, 3, 3)
    keep = [c for c in range(9) if c not in (1, 4 + 3)]
    cols = torch.cat([torch.arange(c * 16, (c + 1) * 16) for c in keep])
    assert torch.equal(p.weights["fc.weight"].to(dtype), m.fc.weight[:, cols])
    assert p.param_count() == (3 * 3 + 3) + (4 * 27 + 4) + (2 * 7 * 16 + 2)
    with torch.no_grad():
        xi = torch.randn(4, 3, 4, 4, dtype=dtype)
        y0, y1 = m(xi), res.module(xi)
    assert float((y0 - y1).abs().max() / y0.abs().max()) <= tol
    assert res.report.to_dict()["verification"]["float64"]["max_rel"] <= (1e-10 if dtype == torch.float64 else 1e-5)


def test_concat_of_three_operands_constant_zero_and_unused_channels():
    torch.manual_seed(0)
    m = _CatMLP().double()
    with torch.no_grad():
        m.b.weight[1] = 0  # operand 1 channel 1: constant relu(0.4) -> folded into out.bias
        m.b.bias[1] = 0.4
        m.c.weight[2] = 0  # operand 2 channel 2: tanh(0) = 0 -> dropped
        m.c.bias[2] = 0.0
        m.out.weight[:, 0] = 0  # operand 0 channel 0: unread
    x = torch.randn(3, 6, dtype=torch.float64)
    res = minimize(m, (x,), strict=True)
    p = res.program
    assert "channels.concat.drop_channel" in res.report.rules_used
    assert [tuple(p.params[k].shape) for k in ("a.weight", "b.weight", "c.weight", "out.weight")] == [
        (4, 6), (3, 6), (2, 6), (2, 9)]
    assert torch.equal(p.weights["out.weight"], m.out.weight[:, [1, 2, 3, 4, 5, 7, 8, 9, 10]])
    with torch.no_grad():
        y0, y1 = m(x), res.module(x)
    assert float((y0 - y1).abs().max() / y0.abs().max()) <= 1e-10


def test_concat_is_refused_without_its_certificate():
    torch.manual_seed(0)
    m = _CatMLP().double()
    with torch.no_grad():
        m.out.weight[:, 0] = 0
    x = torch.randn(3, 6, dtype=torch.float64)
    rs = default_rules()
    base = default_certifier()

    def certify(rule, ruleset):
        return "missing: withheld" if rule.name.startswith("channels.concat.") else base(rule, ruleset)

    q, report = minimize_program(lower(m, (x,), rules=rs), rs, book=RuleBook(rs, certify=certify))
    assert "channels.concat.drop_channel" in report.refused_rules
    assert tuple(q.params["out.weight"].shape) == (2, 12) and tuple(q.params["a.weight"].shape) == (5, 6)
