"""The cycle's own check on real data (`check_same_function`, tolerance `CycleConfig.verify_tolerance`)
refuses a minimized module that is subtly wrong, not only a grossly wrong one, and a cycle whose
minimizer returns such a module stops with VerificationError before it records the cycle."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sr_ir.comparison import compare
from sr_ir.cycle import CycleConfig, PruneSpec, TrainSpec, digits, squeeze_release
from sr_ir.cycle.checkpoint import completed_cycles
from sr_ir.cycle.cycle import check_same_function
from sr_ir.errors import VerificationError

from .mlp_minimizer import MinimizedMLP, mlp_minimize

TOLERANCE = CycleConfig().verify_tolerance


def mlp() -> nn.Sequential:
    """A ReLU MLP with four dead hidden units (zero rows, positive bias): constants the minimizer folds."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    with torch.no_grad():
        m[0].weight[:4] = 0
        m[0].bias[:4] = 0.5
    return m.eval()


def off_by(small: MinimizedMLP, rel: float) -> MinimizedMLP:
    """`small` with its last layer's weight scaled by 1 + rel."""
    out = copy.deepcopy(small)
    with torch.no_grad():
        out.layers[-1].weight.mul_(1 + rel)
    return out


def test_the_tolerance_this_file_pins():
    assert TOLERANCE == 1e-4


def test_check_same_function_refuses_a_subtly_wrong_small_module():
    model, x = mlp(), [torch.randn(32, 64)]
    small = mlp_minimize(model, (x[0],)).module
    assert small.layers[0].weight.shape == (28, 64)  # a different, smaller module, not a copy
    errs = check_same_function(model, small, x, TOLERANCE)
    assert 0 < errs["max_rel_err"] < 1e-6  # the folded constants round in float32, nothing more
    wrong = off_by(small, 1e-3)
    # far above float32 rounding, far below a loose 1e-2: only a tolerance near 1e-4 tells them apart
    assert 2 * TOLERANCE < compare(model, wrong, (x[0],)).max_rel < 1e-2
    with pytest.raises(VerificationError, match="differs from the pruned one"):
        check_same_function(model, wrong, x, TOLERANCE)
    check_same_function(model, off_by(small, 1e-6), x, TOLERANCE)  # rounding level passes


def test_the_cycle_stops_when_the_minimizer_returns_a_subtly_wrong_module(tmp_path):
    def subtly_wrong(model, example_inputs):
        out = mlp_minimize(model, example_inputs)  # its own check passes; the error comes after it
        out.module = off_by(out.module, 1e-3)
        return out

    data = digits()
    cfg = CycleConfig(max_cycles=1, max_drop=100.0, dense_epochs=0, prune=PruneSpec(0.3, "magnitude", "global"),
                      prune_epochs=0.25, max_prune_steps=1, release_epochs=0.25, train=TrainSpec(batch_size=64))
    with pytest.raises(VerificationError, match="differs from the pruned one"):
        squeeze_release(mlp(), data.train, data.val, example_inputs=(data.val[:8][0],), config=cfg,
                        minimizer=subtly_wrong, checkpoint_dir=tmp_path, progress=False)
    assert completed_cycles(tmp_path) == [0]  # the dense model only: cycle 1 was never recorded
