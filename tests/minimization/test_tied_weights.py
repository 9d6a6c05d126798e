"""A parameter several layers read (tied weights) loses a slice only where every reader can lose it: cut
two ways it would become two tensors, and the "minimized" model would be larger than the original."""
from __future__ import annotations

import torch
from torch import nn

import sr_ir
from sr_ir.ir.program import ParamRef


class TwiceTied(nn.Module):
    """fc2's weight read twice (once as fc3): out = fc_out(relu(W relu(W relu(fc1 x))))."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6, bias=False)
        self.fc2 = nn.Linear(6, 6, bias=False)
        self.fc3 = nn.Linear(6, 6, bias=False)
        self.fc3.weight = self.fc2.weight
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.relu(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))))


def _readers(result: sr_ir.Minimized) -> set[str]:
    """The parameters the two reads of the tied weight (the 2nd and 3rd linear) hold."""
    linears = [n for n in result.program.nodes if n.op == "linear"]
    return {o.name for n in linears[1:3] for o in n.operands[1:2] if isinstance(o, ParamRef)}


def test_readers_that_disagree_keep_the_tie_and_the_model_never_grows():
    torch.manual_seed(0)
    m = TwiceTied().double()
    with torch.no_grad():
        m.fc1.weight[2] = 0  # fc1 unit 2 dead: the first read of W need not read column 2, the second must
        m.fc2.weight[4] = 0  # row 4 zero: the first read's unit 4 is dead, the second's feeds `out`
        m.out.weight[:, 4] = 0  # ... which does not read it
    x = torch.randn(3, 6, dtype=torch.float64)
    r = sr_ir.minimize(m, (x,))
    assert r.report.params_after <= r.report.params_before
    (tied,) = _readers(r)  # one tensor still (fc2.weight or fc3.weight: the same parameter)
    w = r.module.state_dict()[tied]
    # row 4 of the first read feeds column 4 of the second, which is column 4 of the first read too,
    # which reads fc1's live unit 4: one chain through the tie, so row 4 stays; column 2 is unread by
    # the first read only (the second reads a live unit 2). Cutting either would untie W: 36 -> 60.
    assert w.shape == (6, 6)
    # and fc1's dead unit 2 can go only with column 2 of W: nothing is removable without untying
    assert r.report.params_after == r.report.params_before
    assert torch.allclose(r.module(x), m(x), rtol=0, atol=1e-12)


def test_readers_that_agree_lose_the_slice_together():
    torch.manual_seed(0)
    m = TwiceTied().double()
    with torch.no_grad():
        m.fc2.weight[1] = 0  # unit 1 of each read is dead ...
        m.fc2.weight[:, 1] = 0  # ... and nobody reads it
    x = torch.randn(3, 6, dtype=torch.float64)
    r = sr_ir.minimize(m, (x,))
    (tied,) = _readers(r)
    assert r.module.state_dict()[tied].shape == (5, 5)
    assert r.report.params_before - r.report.params_after == 6 + 11 + 3  # fc1 row, W row+column, out column
    assert torch.allclose(r.module(x), m(x), rtol=0, atol=1e-12)
