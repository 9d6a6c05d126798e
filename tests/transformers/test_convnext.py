"""ConvNeXt: residual-stream channels removed exactly through compensated LayerNorms (channels-last block
norms and channels-first stage norms), with the depthwise zero-padding caveat respected."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from sr_ir.minimization import minimize
from sr_ir.models.convnext import convnext_small_test, convnext_tiny
from sr_ir.testing.planting import plant_convnext, trainable_param_count


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = convnext_small_test().double().eval()
    with torch.no_grad():  # nonzero biases and layer scales, so that every planted constant matters
        for p in m.parameters():
            if p.dim() == 1:
                p.normal_(0.5, 0.3)
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def test_planted_convnext_minimizes_to_known_count():
    model = _model()
    plan = plant_convnext(model, seed=1, residual=2, mlp_units=4)
    assert plan.original_param_count() == trainable_param_count(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    res = minimize(model, (x,))
    y = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    assert _rel(res.module(y), model(y)) <= 1e-10
    gone = res.report.removed_by_param
    assert sum(gone[f"stages.{s}.0.gamma"][0] for s in range(4)) == 8  # stream channels, per stage
    assert trainable_param_count(res.module) == plan.minimal_param_count()
    ops = [n.op for n in res.program.nodes]
    assert "layer_norm_channels" not in ops and "layer_norm" not in ops
    assert ops.count("compensated_layer_norm_channels") == 4 and ops.count("compensated_layer_norm") == 6


def test_nonzero_constant_under_padded_depthwise_conv_stays():
    """A stream channel holding a nonzero constant feeds 7x7 depthwise convs with zero padding: near the
    borders fewer taps see it, so it is not a constant there and the channel must stay."""
    model = _model(1)
    plan = plant_convnext(model, seed=2, residual=2, mlp_units=0, sparsity=0.0)
    c = plan.residual[0][0]
    with torch.no_grad():
        model.downsample_layers[0][1].bias[c] = 0.7  # stage-0 stream channel c is now the constant 0.7
    res = minimize(model, (torch.randn(2, 3, 32, 32, dtype=torch.float64),))
    y = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert _rel(res.module(y), model(y)) <= 1e-10
    kept = dataclasses.replace(plan, residual={**plan.residual, 0: [k for k in plan.residual[0] if k != c]})
    assert trainable_param_count(res.module) == kept.minimal_param_count()


@pytest.mark.slow
def test_convnext_tiny_planted():
    """The full ConvNeXt-Tiny (27.8M parameters at 10 classes): planted stream channels in every stage and
    dead MLP units in every block, minimized to exactly the known count (about 5 s on 2 cores)."""
    torch.manual_seed(0)
    model = convnext_tiny(num_classes=10, small_input=True).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0.5, 0.3)
    plan = plant_convnext(model, seed=1, residual=4, mlp_units=16, sparsity=0.3)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    res = minimize(model, (x,), n_random=1)
    y = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert _rel(res.module(y), model(y)) <= 1e-10
    assert trainable_param_count(res.module) == plan.minimal_param_count()


def test_a_minimized_convnext_minimizes_again_through_its_compensated_norms():
    # the cycle minimizes the emitted module of the previous cycle: compensated norms compose
    model = _model()
    plant_convnext(model, seed=1, residual=2, mlp_units=4)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    first = minimize(model, (x,)).module
    w = dict(first.named_parameters())
    with torch.no_grad():  # one more stream channel of stage 3 dies: its writers and the norms reading it
        for name in ["downsample_layers.3.1.weight", "downsample_layers.3.1.bias", "norm.weight"]:
            w[name][0] = 0
        for b in range(len(model.stages[3])):
            for name in ["pwconv2.weight", "gamma", "norm.weight"]:
                w[f"stages.3.{b}.{name}"][0] = 0
    second = minimize(first, (x,))
    assert second.report.removed_by_param["stages.3.0.gamma"] == {0: 1}
    y = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    assert _rel(second.module(y), first(y)) <= 1e-10
