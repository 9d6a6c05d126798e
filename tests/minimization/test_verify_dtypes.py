"""Both verification passes compare like with like for a float64 model that computes its norm in
float32 (Hugging Face's RMSNorm): the float32 pass emits the program retyped, its casts back to the
model's dtype following the pass, instead of converting weights under code that casts to float64."""
import torch
from torch import nn

import sr_ir
from sr_ir.minimization.verify import retyped, same_function, working_dtype


class RMSNormMLP(nn.Module):
    """x -> RMSNorm (float32 inside, as HF writes it) -> gated MLP with a dead unit (gate row 3 zero)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(8) + 0.5)
        self.gate = nn.Linear(8, 16, bias=False)
        self.up = nn.Linear(8, 16, bias=False)
        self.down = nn.Linear(16, 8, bias=False)

    def forward(self, x):
        dtype = x.dtype
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)
        h = self.weight * h.to(dtype)
        return self.down(nn.functional.silu(self.gate(h)) * self.up(h))


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = RMSNormMLP().double().eval()
    with torch.no_grad():
        m.gate.weight[3] = 0
    return m


def _x(b: int) -> torch.Tensor:
    return torch.randn(b, 5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(b))


def test_retyped_follows_the_working_dtype_and_keeps_the_models_own_casts():
    p = sr_ir.lower(_model(), [_x(2)])
    assert working_dtype(p) == "f64"
    casts = [n.attrs["dtype"] for n in p.nodes if n.op == "cast"]
    assert casts == ["f32", "f64"]
    q = retyped(p, "f32")
    assert [n.attrs["dtype"] for n in q.nodes if n.op == "cast"] == ["f32", "f32"]
    assert {t.dtype for t in q.params.values()} == {"f32"} and q.inputs[0][1].dtype == "f32"
    assert all(n.type.dtype == "f32" for n in q.nodes)
    assert [n.attrs["dtype"] for n in p.nodes if n.op == "cast"] == ["f32", "f64"]  # the original is untouched
    with torch.no_grad():  # the retyped program is the model converted to float32, exactly
        m32 = _model().float()
        torch.testing.assert_close(sr_ir.emit(q)(_x(3).float()), m32(_x(3).float()), rtol=0, atol=0)


def test_minimize_verifies_both_passes_and_removes_the_dead_unit():
    m = _model()
    r = sr_ir.minimize(m, [_x(2)])
    assert r.program.params["gate.weight"].shape[0] == 15
    assert r.program.params["down.weight"].shape[1] == 15
    v = r.report.verification
    assert v["float64"]["max_rel"] <= 1e-12
    assert v["float32"]["max_rel"] <= 1e-5
    assert [n.attrs["dtype"] for n in r.program.nodes if n.op == "cast"] == ["f32", "f64"]
    with torch.no_grad():
        torch.testing.assert_close(r.module(_x(3)), m(_x(3)), rtol=1e-12, atol=1e-12)


def test_a_wrong_float32_path_is_still_caught():
    """Like with like is not lenient: a minimized module whose float32 norm differs is refused."""
    m = _model()
    r = sr_ir.minimize(m, [_x(2)])
    with torch.no_grad():
        next(r.module.parameters()).mul_(1.001)
    rep = same_function(m, r.module, [_x(2)], raise_on_mismatch=False)
    assert rep.worst("float64").max_rel > 1e-5 and rep.worst("float32").max_rel > 1e-5
