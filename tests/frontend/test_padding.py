"""F.pad lowers to the constant pads of rules/ops/padding.rules (one declaration per number of padded
trailing axes, chosen by its conditions), a pad by zeros is left out, and what no declaration accepts
stops lowering with one line naming the op and the model's line."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sr_ir
from sr_ir.errors import UnsupportedOpError


class Pads(nn.Module):
    """Spatial padding of conv maps, a column of ones appended to the last axis (EfficientViT's values),
    a pad by zeros (Swin's windows when the map divides into them) and a cropping pad."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = F.pad(self.conv(x), (1, 2, 0, 1))  # [N, 4, 7, 9]
        z = F.pad(y.permute(0, 2, 3, 1), (0, 1), value=1.0)  # [N, 7, 9, 5]
        z = F.pad(z, (0, 0, 0, 0, 0, 0))
        z = F.pad(z, (0, 0, -1, 0, 1, 1))  # crop one column, two more rows (zero: the channel stays 0)
        return self.fc(z[..., :4])


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = Pads().double().eval()
    with torch.no_grad():  # channel 2 of the conv is exactly zero
        m.conv.weight[2] = 0
        m.conv.bias[2] = 0
    return m


def _x(b: int) -> torch.Tensor:
    return torch.randn(b, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(b))


def test_pads_lower_by_their_length_and_zero_pads_vanish():
    p = sr_ir.lower(_model(), [_x(2)])
    ops = [(n.op, n.attrs.get("pad"), n.attrs.get("value", 0.0)) for n in p.nodes if n.op.startswith("pad")]
    assert ops == [("pad2d", [1, 2, 0, 1], 0.0), ("pad1d", [0, 1], 1.0), ("pad3d", [0, 0, -1, 0, 1, 1], 0.0)]
    text = p.to_text()
    assert sr_ir.parse(text).to_text() == text


def test_a_zero_channel_goes_through_zero_padding_and_the_result_is_exact():
    m = _model()
    r = sr_ir.minimize(m, [_x(2)])
    # the zero conv channel passes pad2d (value 0), the permute, the ones column and the crop
    assert r.program.params["conv.weight"].shape[0] == 3
    assert r.program.params["fc.weight"].shape[1] == 3
    assert r.report.verification["float64"]["max_rel"] <= 1e-12
    with torch.no_grad():
        torch.testing.assert_close(r.module(_x(3)), m(_x(3)), rtol=1e-12, atol=1e-12)


class Reflect(nn.Module):
    def forward(self, x):
        return F.pad(x, (1, 1, 2, 1), mode="reflect")


class FourAxes(nn.Module):
    def forward(self, x):
        return F.pad(x, (1, 1, 1, 1, 1, 1, 1, 1))


@pytest.mark.parametrize("model, why", [(Reflect(), 'mode == "constant" (mode = "reflect")'),
                                        (FourAxes(), "len(pad) == 6")])
def test_what_no_pad_accepts_is_one_line_at_the_model_line(model, why):
    with pytest.raises(UnsupportedOpError) as e:
        sr_ir.lower(model, [torch.randn(2, 3, 8, 8, dtype=torch.float64)])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("unsupported aten.pad.default at ") and "test_padding.py:" in msg
    assert why in msg
