"""In-place ops lower as their functional twins; writes through views go through torch's functionalization."""
import torch
from torch import nn

import sr_ir
from sr_ir.frontend.lower import export_model, functional, out_of_place


class InPlaceBlock(nn.Module):
    """The torchvision idiom: ReLU(inplace=True) and `out += identity` on fresh intermediates."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.act = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5, inplace=True)

    def forward(self, x):
        out = self.act(self.bn(self.conv(x)))
        out += x
        out = self.act(out)
        return self.drop(out.flatten(1))  # dropout_ on a view: a no-op in eval mode


class WritesThroughAView(nn.Module):
    """`h.view(...).relu_()` changes h through a view: only real functionalization gets that right."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        h.view(-1, 2, 2).relu_()
        return h * 2.0


def _lowered_matches(model, x):
    model = model.double().eval()
    p = sr_ir.lower(model, [x])
    got = sr_ir.emit(p)(x)
    torch.testing.assert_close(got, model(x), rtol=1e-12, atol=1e-12)
    return p


def test_in_place_ops_have_functional_twins():
    assert str(out_of_place(torch.ops.aten.relu_.default)) == "aten.relu.default"
    assert str(out_of_place(torch.ops.aten.add_.Tensor)) == "aten.add.Tensor"
    assert out_of_place(torch.ops.aten.relu.default) is None


def test_in_place_on_fresh_values_keeps_the_graph_as_written():
    model, x = InPlaceBlock().double().eval(), torch.randn(2, 3, 5, 5, dtype=torch.float64)
    ep = export_model(model, [x])
    assert functional(ep) is ep  # no functionalization pass needed: batch_norm stays batch_norm
    p = _lowered_matches(model, x)
    ops = [n.op for n in p.nodes]
    assert ops.count("relu") == 2 and "add" in ops and "batch_norm" in ops


def test_a_write_through_a_view_is_functionalized_exactly():
    model, x = WritesThroughAView(), torch.randn(3, 4, dtype=torch.float64)
    ep = export_model(model.double().eval(), [x])
    assert functional(ep) is not ep
    _lowered_matches(model, x)
