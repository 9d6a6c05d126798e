"""bfloat16 and float16 models minimize: lowering, the rewrites and emission keep the model's dtype,
verification checks the model's own dtype at its tolerance and the function in float32 and float64 (the
programs run by the interpreter with each weight cast up as it is read), and a minimized module off by
more than the dtype's rounding is refused."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sr_ir
from sr_ir.errors import VerificationError
from sr_ir.minimization.verify import STORED_ROUNDING, TOLERANCE, same_function
from sr_ir.models.transformers import build, example_ids, small_config
from sr_ir.testing.planting import plant

HALF = [torch.bfloat16, torch.float16]
NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def mlp() -> nn.Module:
    """Ten constant hidden units (zero rows, bias 0.3: folded into the next layer) and four unread ones."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 8))
    with torch.no_grad():
        m[0].weight[:10] = 0
        m[0].bias[:10] = 0.3
        m[2].weight[:, 20:24] = 0
    return m.eval()


def cnn() -> nn.Module:
    """Dead filters before a batch norm (folded first) and before the pooling head."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        m[0].weight[:4] = 0
        m[1].running_var.uniform_(0.5, 2)
        m[1].running_mean.normal_()
        m[3].weight[:3] = 0
    return m.eval()


def transformer() -> tuple[nn.Module, tuple[torch.Tensor]]:
    """A small pre-LN encoder with planted dead heads, query/key and value dims, MLP units and stream
    channels (compensated LayerNorms)."""
    cfg = small_config("pre_ln", n_layers=1)
    m = build("pre_ln", cfg)  # float64: planted exactly, then converted
    plant(m, seed=11)
    return m, (example_ids(cfg),)


def _case(kind: str, dtype: torch.dtype) -> tuple[nn.Module, tuple[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    if kind == "mlp":
        return mlp().to(dtype), (torch.randn(8, 16, generator=g).to(dtype),)
    if kind == "cnn":
        return cnn().to(dtype), (torch.randn(4, 3, 12, 12, generator=g).to(dtype),)
    m, x = transformer()
    return m.to(dtype).eval(), x


@pytest.mark.parametrize("kind", ["mlp", "cnn", "transformer"])
@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_a_half_model_minimizes_verified_and_keeps_its_dtype(kind, dtype):
    model, x = _case(kind, dtype)
    before = sum(p.numel() for p in model.parameters())
    r = sr_ir.minimize(model, x)
    assert r.report.params_after < 0.9 * before  # really minimized
    assert {t.dtype for t in r.module.state_dict().values() if t.is_floating_point()} == {dtype}
    assert {t.dtype for n, t in r.program.weights.items() if t.is_floating_point()} == {dtype}
    v = r.report.verification
    own = v[NAMES[dtype]]["max_rel"]
    assert own <= TOLERANCE[dtype]
    # the wider passes see only the folded constants' rounding to the model's dtype, once
    assert v["float32"]["max_rel"] <= STORED_ROUNDING[dtype] and v["float64"]["max_rel"] <= STORED_ROUNDING[dtype]
    assert v["checks"] == 3 * 2  # three dtypes, the example and one random input
    with torch.no_grad():
        y, want = r.module(*x), model(*x)
    assert y.dtype == dtype
    assert float((y.double() - want.double()).abs().max()) <= TOLERANCE[dtype] * float(want.double().abs().max())


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "f16"])
def test_a_half_model_off_by_more_than_its_rounding_is_refused(dtype):
    model, x = _case("mlp", dtype)
    small = sr_ir.minimize(model, x).module
    wrong = copy.deepcopy(small)
    with torch.no_grad():
        wrong.get_parameter("4.weight").mul_(1.0625)  # exact in both dtypes; 6% is beyond either's rounding
    with pytest.raises(VerificationError, match=rf"in {NAMES[dtype]}: .* nothing was written"):
        same_function(model, wrong, x)
    # the float64 pass alone sees it too, far above the storage bound
    rep = same_function(model, wrong, x, dtypes=(torch.float64,), raise_on_mismatch=False)
    assert rep.worst("float64").max_rel > 10 * STORED_ROUNDING[dtype]


def test_the_half_tolerances_these_tests_pin():
    assert TOLERANCE[torch.bfloat16] == 4e-2 and TOLERANCE[torch.float16] == 5e-3
    assert STORED_ROUNDING == {torch.float16: 1e-3, torch.bfloat16: 4e-3}
