"""Bundled models with random unstructured masks and planted structure minimize exactly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sr_ir.minimization import minimize
from sr_ir.models.cnn import VGG
from sr_ir.models.convnext import convnext_small_test
from sr_ir.models.lenet import lenet300_100

from .nets import GeluMLP, prune_all, randomize_bn, weight_of


def _check(res, f64=1e-10, f32=1e-5):
    v = res.report.verification
    assert v["float64"]["max_rel"] <= f64, v
    assert v["float32"]["max_rel"] <= f32, v
    assert res.report.params_after < res.report.params_before


def _plant_lenet(m: nn.Module) -> None:
    with torch.no_grad():
        weight_of(m.fc1)[:40] = 0  # dead rows: relu(bias) constants, most nonzero
        m.fc1.bias[:40] = torch.linspace(-1, 1, 40)
        weight_of(m.fc2)[:, 200:230] = 0  # dead columns of the next layer
        weight_of(m.fc2)[:10] = 0  # dead rows in the second layer
        m.fc2.bias[:10] = 0.5  # constant 0.5 neurons, folded into fc3


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_lenet_random_masks_and_planted_units(sparsity):
    m = prune_all(lenet300_100().double(), sparsity)
    _plant_lenet(m)
    x = torch.randn(16, 784, dtype=torch.float64)
    res = minimize(m, (x,))
    _check(res)
    rep = res.report
    assert rep.removed_by_param["fc1.weight"][0] >= 70  # 40 dead rows + 30 unused columns
    assert rep.removed_by_param["fc2.weight"][0] >= 10
    assert rep.rules_used and not any("linear" in r for r in rep.refused_rules)
    # the emitted module runs on another batch size, in float32 too
    y = res.module.float()(torch.randn(3, 784))
    assert y.shape == (3, 10)


def test_gelu_constants_fold_through_gelu():
    torch.manual_seed(1)
    m = GeluMLP().double()
    with torch.no_grad():
        m.layers[0].weight[:5] = 0
        m.layers[0].bias[:5] = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0])  # gelu(b) != 0 except b = 0
        m.layers[1].weight[:4] = 0
        m.layers[1].bias[:4] = 1.3
    res = minimize(m, (torch.randn(8, 20, dtype=torch.float64),))
    _check(res)
    assert res.report.removed_by_param["layers.0.weight"][0] == 5
    assert res.report.removed_by_param["layers.1.weight"][0] == 4


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_vgg_with_batchnorm_and_padded_convs(sparsity):
    torch.manual_seed(2)
    m = VGG().double().eval()
    randomize_bn(m)
    convs = [c for c in m.features if isinstance(c, nn.Conv2d)]
    prune_all(m, sparsity)
    with torch.no_grad():
        weight_of(convs[0])[:4] = 0  # dead filters: constants after BN + ReLU (read by a padded conv)
        weight_of(convs[1])[:, 8:12] = 0  # unused input channels of a padded conv
        weight_of(convs[2])[:3] = 0
    res = minimize(m, (torch.randn(4, 3, 16, 16, dtype=torch.float64),))
    _check(res)
    assert len(res.report.batch_norms_folded) == 5
    assert res.report.removed_by_param["features.0.weight"][0] >= 4  # 8:12 unused (+ zero constants)


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_convnext_small_gelu_mlp_units(sparsity):
    torch.manual_seed(3)
    m = convnext_small_test().double().eval()
    blocks = [b for s in m.stages for b in s]
    prune_all(m, sparsity)
    with torch.no_grad():
        for b in blocks:
            b.gamma.normal_()
            h = weight_of(b.pwconv1).shape[0]
            weight_of(b.pwconv1)[: h // 4] = 0  # constant gelu(bias) units, folded into pwconv2's bias
            weight_of(b.pwconv2)[:, -3:] = 0  # unused units
    res = minimize(m, (torch.randn(2, 3, 32, 32, dtype=torch.float64),))
    _check(res)
    for i, b in enumerate(blocks):
        h = weight_of(b.pwconv1).shape[0]
        assert sum(v for v in res.report.removed_by_param[f"stages.{[0, 1, 2, 2, 3][i]}.{[0, 0, 0, 1, 0][i]}.pwconv1.weight"].values()) >= h // 4 + 3


def test_float32_model_minimizes_within_float32_rounding():
    m = prune_all(lenet300_100(), 0.9)
    _plant_lenet(m)
    res = minimize(m, (torch.randn(8, 784),))
    # folded biases are stored in float32, so float64 evaluation also sees float32 rounding
    _check(res, f64=1e-5)
    assert next(res.module.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_convnext_tiny_at_90_percent_with_planted_units():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from minimize_convnext import build

    m, plan = build(seed=0, dead=0.4, unused=0.1, sparsity=0.9)
    m = m.double()
    res = minimize(m, (torch.randn(1, 3, 32, 32, dtype=torch.float64),), n_random=1)
    _check(res)
    removed = sum(len(v) for v in plan.values())
    assert sum(g["removed"] for g in res.report.groups) >= removed


class _Mask(nn.Module):
    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def test_parametrization_masks_are_honoured():
    from torch.nn.utils import parametrize

    torch.manual_seed(4)
    m = GeluMLP().double()
    mask = torch.ones_like(m.layers[0].weight)
    mask[:6] = 0  # six dead units, only through the parametrization (the raw weight is dense)
    parametrize.register_parametrization(m.layers[0], "weight", _Mask(mask))
    res = minimize(m, (torch.randn(4, 20, dtype=torch.float64),))
    _check(res)
    assert res.report.removed_by_param["layers.0.weight"][0] == 6


def test_unread_pixels_are_gathered_through_a_noop_flatten():
    # LeNet300100.forward flattens rows that are already flat; the identity reshape must not pin the input.
    m = lenet300_100().double()
    with torch.no_grad():
        weight_of(m.fc1)[:, :300] = 0
    res = minimize(m, (torch.randn(8, 784, dtype=torch.float64),))
    _check(res)
    assert res.program.weights["fc1.weight"].shape == (300, 484)
    assert "reshape" not in {n.op for n in res.program.nodes}


def test_package_function_survives_importing_the_subpackage():
    import sr_ir
    import sr_ir.minimization  # noqa: F401  (once shadowed the function of the same name)

    assert callable(sr_ir.minimize)
    res = sr_ir.minimize(nn.Linear(4, 3).double(), (torch.randn(2, 4, dtype=torch.float64),))
    assert isinstance(res, sr_ir.Minimized)
