"""Float32 casts inside a float64 model are part of its function: torch's type promotion between
float dtypes becomes an explicit cast node, and a `torch.autocast(enabled=False)` block is walked in
place with the casts it makes."""
import torch
from torch import nn

import sr_ir


class T5Norm(nn.Module):
    """T5's LayerNorm: the variance in float32, multiplied into the float64 activations (promotion)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.weight = nn.Parameter(torch.rand(6) + 0.5)

    def forward(self, x):
        h = self.fc(x)
        var = h.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.weight * (h * torch.rsqrt(var + 1e-6))


class AutocastOff(nn.Module):
    """timm's EfficientViT: a product computed in float32 inside `autocast(enabled=False)`."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        h = self.fc(x)
        with torch.autocast(device_type="cpu", enabled=False):
            y = (h.float() * h.float()).to(x.dtype)
        return y + h


def _x(b: int) -> torch.Tensor:
    return torch.randn(b, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(b))


def test_promotion_is_an_explicit_cast_to_the_result_dtype():
    torch.manual_seed(0)
    m = T5Norm().double().eval()
    p = sr_ir.lower(m, [_x(2)])
    casts = [(str(n.operands[0]), n.attrs["dtype"]) for n in p.nodes if n.op == "cast"]
    assert [d for _, d in casts] == ["f32", "f64"]  # the model's own cast, and rsqrt's result promoted
    rsqrt = next(n for n in p.nodes if n.op == "rsqrt")
    assert rsqrt.type.dtype == "f32" and casts[1][0] == f"%{rsqrt.name}"
    assert all(n.type.dtype == "f64" for n in p.nodes if n.op == "mul")
    text = p.to_text()
    assert sr_ir.parse(text).to_text() == text
    with torch.no_grad():
        torch.testing.assert_close(sr_ir.emit(p)(_x(3)), m(_x(3)), rtol=0, atol=0)


def test_an_autocast_block_that_is_off_is_lowered_in_place():
    torch.manual_seed(0)
    m = AutocastOff().double().eval()
    p = sr_ir.lower(m, [_x(2)])
    assert [n.attrs["dtype"] for n in p.nodes if n.op == "cast"] == ["f32", "f32", "f64"]
    assert any(n.op == "mul" and n.type.dtype == "f32" for n in p.nodes)
    with torch.no_grad():
        torch.testing.assert_close(sr_ir.emit(p)(_x(3)), m(_x(3)), rtol=0, atol=0)
