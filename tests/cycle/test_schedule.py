"""The per-phase learning-rate schedule of TrainSpec: the cosine values exactly, the rate Adam steps with at
every batch of fine_tune, the constant default untouched, and the setting's flat name in presets."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sr_ir.cycle import CycleConfig, TrainSpec
from sr_ir.cycle.train import SCHEDULES, batches_per_phase, fine_tune, lr_at
from sr_ir.errors import SrIrError


def test_cosine_values_exactly():
    spec = TrainSpec(lr=0.3, schedule="cosine")
    assert lr_at(spec, 0, 8) == 0.3
    assert lr_at(spec, 4, 8) == pytest.approx(0.15, abs=1e-15)
    assert lr_at(spec, 7, 8) == pytest.approx(0.3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)), abs=1e-15)
    assert [lr_at(TrainSpec(lr=0.3), k, 8) for k in range(8)] == [0.3] * 8


def test_unknown_schedule_is_refused():
    with pytest.raises(SrIrError, match="unknown learning-rate schedule 'linear'; choose one of constant, cosine"):
        TrainSpec(schedule="linear")
    assert SCHEDULES == ("constant", "cosine")


class _Recording(torch.optim.Adam):
    """Adam that records the rate of every step (the rate fine_tune set before it)."""

    seen: list[float] = []

    def step(self, closure=None):  # type: ignore[override]
        _Recording.seen.append(self.param_groups[0]["lr"])
        return super().step(closure)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_fine_tune_steps_with_the_schedule(monkeypatch, schedule):
    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(50, 3, dtype=torch.float64), torch.randint(0, 2, (50,)))
    model = nn.Linear(3, 2).double()
    spec = TrainSpec(epochs=2.5, lr=0.01, batch_size=8, schedule=schedule)
    monkeypatch.setattr(torch.optim, "Adam", _Recording)
    _Recording.seen = []
    fine_tune(model, ds, spec, seed=0, tag="t")
    total = batches_per_phase(ds, spec)  # 7 batches an epoch: 7 + 7 + round(3.5) = 18
    assert total == 18 and len(_Recording.seen) == total
    assert _Recording.seen == [lr_at(spec, k, total) for k in range(total)]
    if schedule == "cosine":
        assert _Recording.seen[0] == 0.01 and _Recording.seen[-1] < 0.01 * 0.01


def test_schedule_is_a_flat_preset_setting():
    cfg = CycleConfig.preset("unit", schedule="cosine")
    assert cfg.train.schedule == "cosine"
    assert CycleConfig.preset("unit").train.schedule == "constant"  # the presets' default is unchanged
    assert CycleConfig.from_dict(cfg.to_dict()) == cfg
