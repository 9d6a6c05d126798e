"""The report says which exactly-zero channels stay, and why (issue: a user sees a zeroed unit kept and
cannot tell whether sr-ir missed it)."""
import torch
from torch import nn

import sr_ir


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 5)

    def forward(self, x):
        h = torch.relu(self.fc1(x))
        return self.fc2(h), h  # h is an output too: its zero channel cannot go


def test_a_zero_channel_the_network_returns_is_reported_with_the_reason():
    torch.manual_seed(0)
    m = Net().double().eval()
    with torch.no_grad():
        m.fc1.weight[2] = 0
        m.fc1.bias[2] = 0
    r = sr_ir.minimize(m, (torch.randn(3, 4, dtype=torch.float64),))
    assert r.program.params["fc1.weight"].shape[0] == 6  # kept: the caller reads channel 2 of h
    kept = [k for k in r.report.kept_zero if k["op"] == "relu"]
    assert kept and kept[0]["axis"] == 1 and kept[0]["channels"] == [2]
    assert any("network output" in w for w in kept[0]["why"]), kept
    assert "kept zero: %" in r.report.table() and "network output" in r.report.table()
    assert r.report.to_dict()["kept_zero"] == r.report.kept_zero


def test_nothing_is_reported_when_every_zero_channel_goes():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5)).double().eval()
    with torch.no_grad():
        m[0].weight[2] = 0
        m[0].bias[2] = 0
    r = sr_ir.minimize(m, (torch.randn(3, 4, dtype=torch.float64),))
    assert r.program.params["0.weight"].shape[0] == 5
    assert r.report.kept_zero == []
