"""The analysis runs on one intra-op thread and gives the caller's setting back (sr_ir.minimization.api.one_thread)."""
from __future__ import annotations

import pytest
import torch

import sr_ir
import sr_ir.minimization.api as api
from sr_ir.models.lenet import example_inputs, lenet300_100


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_analysis_runs_on_one_thread_and_restores_the_setting(two_threads, monkeypatch):
    seen: list[int] = []
    propagate = api.propagate

    def watching(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return propagate(*args, **kwargs)

    monkeypatch.setattr(api, "propagate", watching)
    model = lenet300_100()
    with torch.no_grad():
        model.fc1.weight[:5] = 0  # five dead units: the fixpoint takes two passes
    result = sr_ir.minimize(model, example_inputs(2))
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == 2
    assert result.report.params_after < result.report.params_before


def test_the_setting_comes_back_when_the_analysis_fails(two_threads, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(api, "propagate", failing)
    with pytest.raises(RuntimeError, match="boom"):
        api.minimize_program(sr_ir.lower(lenet300_100(), example_inputs(2)))
    assert torch.get_num_threads() == 2
