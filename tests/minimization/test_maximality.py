"""Networks whose minimal size is known by construction: the result has exactly that many parameters.
Covers cascades (a fold makes the next layer's row dead; a removal makes an earlier column unused) and
channels tied across a residual add."""
from __future__ import annotations

import torch
from torch import nn

from sr_ir.minimization import minimize

from .nets import Residual, count


class MLP(nn.Module):
    def __init__(self, sizes):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x):
        for i, f in enumerate(self.fcs):
            x = f(x)
            if i < len(self.fcs) - 1:
                x = torch.relu(x)
        return x


def _linear_params(shapes):
    return sum(o * i + o for i, o in shapes)


def test_constant_cascade_and_unused_cascade_reach_the_known_minimum():
    torch.manual_seed(0)
    m = MLP([10, 8, 8, 8, 3]).double()
    f1, f2, f3, f4 = m.fcs
    with torch.no_grad():
        for f in m.fcs:
            f.weight.copy_(torch.randn_like(f.weight).sign() * (torch.rand_like(f.weight) + 0.5))  # no accidental zeros
        # pass 1: units 0..2 of h1 are constant relu(b) > 0
        f1.weight[:3] = 0
        f1.bias[:3] = torch.tensor([0.3, 0.9, 1.4])
        # pass 2: h2 units 0, 1 read only those constants, so they become constant after folding
        f2.weight[:2, 3:] = 0
        # pass 3: h3 unit 0 reads only h2 units 0, 1
        f3.weight[0, 2:] = 0
        # unused cascade: the output ignores h3 unit 7; h2 unit 5 feeds only h3 unit 7
        f4.weight[:, 7] = 0
        f3.weight[:7, 5] = 0
        f3.bias.abs_()  # keep relu(b) of the cascaded constants nonzero: folding, not just dropping
        f2.bias.abs_()
    res = minimize(m, (torch.randn(6, 10, dtype=torch.float64),))
    h1, h2, h3 = 8 - 3, 8 - 2 - 1, 8 - 1 - 1
    expected = _linear_params([(10, h1), (h1, h2), (h2, h3), (h3, 3)])
    assert count(res.module) == expected
    assert res.report.passes >= 3
    assert res.report.verification["float64"]["max_rel"] <= 1e-12


def test_residual_stream_channels_go_only_when_every_writer_and_reader_agrees():
    torch.manual_seed(1)
    m = Residual().double()
    with torch.no_grad():
        for f in (m.fc_in, m.fc1, m.fc2, m.fc_out):
            f.weight.copy_(torch.randn_like(f.weight).sign() * (torch.rand_like(f.weight) + 0.5))
        m.fc_in.weight[0] = 0  # stream channel 0: constant b_in[0] + b2[0] (both writers dead) -> folded
        m.fc2.weight[0] = 0
        m.fc1.weight[:, 1] = 0  # stream channel 1: no reader -> dropped from both writers
        m.fc_out.weight[:, 1] = 0
        m.fc_in.weight[2] = 0  # stream channel 2: one writer dead, the other alive -> stays
        m.fc1.weight[3] = 0  # hidden unit 3: constant relu(b) -> folded into fc2
        m.fc1.bias[3] = 0.8
    res = minimize(m, (torch.randn(5, 12, dtype=torch.float64),))
    d, h = 10 - 2, 16 - 1
    assert count(res.module) == _linear_params([(12, d), (d, h), (h, d), (d, 4)])
    assert res.report.verification["float64"]["max_rel"] <= 1e-12


def test_unread_network_inputs_are_gathered_and_the_interface_keeps_its_shape():
    torch.manual_seed(2)
    m = MLP([20, 6, 3]).double()
    with torch.no_grad():
        m.fcs[0].weight[:, 5:12] = 0
    x = torch.randn(4, 20, dtype=torch.float64)
    res = minimize(m, (x,))
    assert count(res.module) == _linear_params([(13, 6), (6, 3)])
    assert res.module(x).shape == (4, 3)
    assert "gather" in res.module.sr_ir_source or "index_select" in res.module.sr_ir_source


def test_already_minimal_network_is_a_fixpoint_and_emitted_modules_minimize_again():
    torch.manual_seed(3)
    m = MLP([12, 9, 7, 3]).double()
    with torch.no_grad():
        m.fcs[0].weight[:2] = 0
        m.fcs[1].weight[:, 4] = 0
    x = torch.randn(4, 12, dtype=torch.float64)
    first = minimize(m, (x,))
    again = minimize(first.module, (x,))
    assert again.report.params_after == again.report.params_before == first.report.params_after
    assert again.report.passes == 0
    # the cycle's case: plant more structure in the emitted module and minimize that
    with torch.no_grad():
        getattr(first.module.fcs, "1").weight[0] = 0  # emitted modules keep the original parameter names
    third = minimize(first.module, (x,))
    assert third.report.params_after < first.report.params_after
    assert third.report.verification["float64"]["max_rel"] <= 1e-12


def test_a_second_round_shrinks_the_input_gather_of_an_emitted_module():
    torch.manual_seed(4)
    m = MLP([20, 6, 3]).double()
    with torch.no_grad():
        m.fcs[0].weight[:, 5:12] = 0
    x = torch.randn(4, 20, dtype=torch.float64)
    first = minimize(m, (x,))
    with torch.no_grad():
        getattr(first.module.fcs, "0").weight[:, :3] = 0  # kept inputs 0, 1, 2 become unread too
    second = minimize(first.module, (x,))
    kept = dict(second.module.named_buffers())["x_kept"].tolist()
    assert kept == [3, 4] + list(range(12, 20))
    assert count(second.module) == _linear_params([(10, 6), (6, 3)])
    assert second.report.verification["float64"]["max_rel"] <= 1e-12
