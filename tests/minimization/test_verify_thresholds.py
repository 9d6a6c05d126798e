"""The verifier's tolerances are pinned: a minimized module off by a small relative amount in one weight
tensor is refused in the dtype whose tolerance that amount exceeds, rounding-level changes pass, and a
subtly wrong fold (a compensation off by a relative 1e-8) stops `sr-ir minimize` before it writes.
Loosening a tolerance (float64 1e-10 -> 1e-3, float32 1e-5 -> 1e-3) fails these tests."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sr_ir.cli.main import EXIT_VERIFICATION, main
from sr_ir.errors import VerificationError
from sr_ir.minimization import minimize
from sr_ir.minimization.verify import TOLERANCE, same_function


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def planted(dtype: torch.dtype = torch.float64) -> TwoLayer:
    """Three constant hidden units (zero rows, bias 0.5): minimizing folds them into fc2's bias."""
    torch.manual_seed(0)
    m = TwoLayer().to(dtype)
    with torch.no_grad():
        m.fc1.weight[:3] = 0
        m.fc1.bias[:3] = 0.5
    return m.eval()


def example_inputs() -> tuple[torch.Tensor]:
    return (torch.randn(5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64),)


def scaled(module: nn.Module, name: str, rel: float) -> nn.Module:
    """A copy of `module` whose parameter `name` is multiplied by 1 + rel."""
    out = copy.deepcopy(module)
    with torch.no_grad():
        out.get_parameter(name).mul_(1 + rel)
    return out


def _minimized(dtype: torch.dtype) -> tuple[nn.Module, nn.Module, tuple[torch.Tensor]]:
    model = planted(dtype)
    x = tuple(t.to(dtype) for t in example_inputs())
    small = minimize(model, x).module
    assert small.get_parameter("fc2.weight").shape == (3, 5)  # really minimized, not a copy
    return model, small, x


@pytest.fixture(scope="module")
def minimized64():
    return _minimized(torch.float64)


@pytest.fixture(scope="module", params=[torch.float64, torch.float32], ids=["f64-model", "f32-model"])
def minimized(request, minimized64):
    return minimized64 if request.param == torch.float64 else _minimized(request.param)


def test_the_tolerances_these_tests_pin():
    # the half dtypes' own are pinned in test_half_dtypes.py
    assert {d: TOLERANCE[d] for d in (torch.float64, torch.float32)} == {torch.float64: 1e-10, torch.float32: 1e-5}


def test_float64_refuses_a_relative_1e8_change_in_one_weight(minimized64):
    model, small, x = minimized64
    wrong = scaled(small, "fc2.weight", 1e-8)
    rep = same_function(model, wrong, x, raise_on_mismatch=False)
    # the change is far above float64 rounding and far below 1e-3: only the float64 tolerance sees it
    assert 1e-9 < rep.worst("float64").max_rel < 1e-7
    assert rep.worst("float32").max_rel <= TOLERANCE[torch.float32]
    with pytest.raises(VerificationError, match=r"in float64: .* > 1e-10\); nothing was written"):
        same_function(model, wrong, x)
    ok = same_function(model, scaled(small, "fc2.weight", 1e-14), x)
    assert ok.worst("float64").max_rel < 1e-13


def test_float32_refuses_a_relative_1e4_change_in_one_weight(minimized):
    model, small, x = minimized
    wrong = scaled(small, "fc2.weight", 1e-4)
    rep = same_function(model, wrong, x, dtypes=(torch.float32,), raise_on_mismatch=False)
    assert 2e-5 < rep.worst("float32").max_rel < 1e-4  # above the float32 tolerance, below 1e-3
    with pytest.raises(VerificationError, match=r"in float32: .* > 1e-05\); nothing was written"):
        same_function(model, wrong, x, dtypes=(torch.float32,))
    ok = same_function(model, scaled(small, "fc2.weight", 1e-7), x, dtypes=(torch.float32,))  # float32 rounding
    assert ok.worst("float32").max_rel < 1e-6


# fold_const as bundled, but the folded constant is off by a relative 1e-8: invisible in float32
SUBTLY_WRONG_FOLD = """
rule channels.linear.fold_const
  match y = linear(x: [*B, n], weight, bias)
  where x[*B, c] == k
  then  y = linear(drop(x, -1, c), drop(weight, 1, c), bias + 1.00000001 * k * weight[:, c])
"""


def _forge_subtly_wrong_fold(monkeypatch) -> None:
    """Only the proved rules run; forge this one's certificate so that the numeric check alone stands."""
    import sr_ir.lang.loader as loader
    import sr_ir.rewrite.rulebook as rulebook
    from sr_ir.testing.forging import replaced, trusting

    rs = replaced(loader.default_rules(), "channels.linear.fold_const", SUBTLY_WRONG_FOLD)
    monkeypatch.setattr(loader, "_DEFAULT", rs)  # what every caller of default_rules() gets
    certify = trusting({"channels.linear.fold_const"})
    monkeypatch.setattr(rulebook, "default_certifier", lambda: certify)


def test_a_subtly_wrong_fold_is_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    _forge_subtly_wrong_fold(monkeypatch)
    loose = minimize(planted(), example_inputs(), tolerance={torch.float64: 1e-3})
    assert 1e-10 < loose.report.verification["float64"]["max_rel"] < 1e-7  # it is the fold, and it is subtle
    outs = [tmp_path / "m.sr", tmp_path / "m.pt2"]
    rc = main(["minimize", f"{__name__}:planted", "--quiet"] + [a for o in outs for a in ("-o", str(o))])
    err = capsys.readouterr().err
    assert rc == EXIT_VERIFICATION, err
    assert "in float64" in err and "nothing was written" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
