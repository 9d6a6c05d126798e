"""The cycle end to end on a tiny MLP (scikit-learn digits), with the MLP test-double minimizer."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sr_ir.cycle.cycle as cycle_mod
from sr_ir.cycle import CycleConfig, PruneSpec, TrainSpec, digits, squeeze_release
from sr_ir.cycle.checkpoint import completed_cycles, cycle_path, load_cycle
from sr_ir.cycle.cycle import check_same_function
from sr_ir.errors import SrIrError, VerificationError

from .mlp_minimizer import mlp_minimize


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 16)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def data():
    return digits()


def fresh() -> TinyMLP:
    torch.manual_seed(0)
    return TinyMLP()


CFG = CycleConfig(
    max_cycles=3, max_drop=2.0, dense_epochs=10, prune=PruneSpec(0.3, "magnitude", "global"), prune_epochs=1,
    max_prune_steps=4, release_epochs=1, train=TrainSpec(batch_size=64, lr=3e-3, distill=0.5),
)


def run(data, tmp=None, resume=False, config=CFG, minimizer=mlp_minimize, on_cycle=None):
    return squeeze_release(fresh(), data.train, data.val, test=data.test, example_inputs=(data.val[:8][0],),
                           config=config, minimizer=minimizer, checkpoint_dir=tmp, resume=resume,
                           on_cycle=on_cycle, progress=False)


def strip(records):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in records]


def test_cycle_removes_units_and_verifies(data):
    res = run(data)
    first = res.records[0]
    assert first["units_removed_total"] > 0
    assert first["params"] < res.dense_record["params"]
    for r in res.records:
        assert r["max_rel_err"] < 1e-5  # our own check on real data, float32 rounding level
        # the minimized module computes what the pruned one did
        assert r["val_acc"] == pytest.approx(r["pruned_val_acc"], abs=1 / 179)
        assert r["val_acc"] >= res.dense_record["floor"] - 1e-12
    sizes = [r["params"] for r in res.records]
    assert sizes == sorted(sizes, reverse=True)
    rel = first["release"]
    assert rel["released"] > 0 and rel["alpha"] in [a for a, _ in rel["ladder"]]
    assert abs(rel["loss_after"] - rel["loss_before"]) <= CFG.release_tolerance * rel["loss_before"] + 1e-9
    best = res.best()
    assert best is not None and best["compression"] > 1.0


class Interrupt(Exception):
    pass


def test_resume_after_interruption_is_identical(data, tmp_path, monkeypatch):
    whole = run(data, tmp_path / "whole")
    assert [r["cycle"] for r in whole.records] == [1, 2, 3]  # so both interruptions below fall inside the run

    # every training phase, by tag, as the cycle runs it: proof of where a run stopped and restarted
    phases: list[str] = []
    real_fine_tune = cycle_mod.fine_tune

    def recording_fine_tune(*args, tag, **kwargs):
        phases.append(tag)
        return real_fine_tune(*args, tag=tag, **kwargs)
    monkeypatch.setattr(cycle_mod, "fine_tune", recording_fine_tune)

    seen: list[int] = []

    def stop_after_cycle_1(r):
        seen.append(r["cycle"])
        if r["cycle"] == 1:
            raise Interrupt
    with pytest.raises(Interrupt):
        run(data, tmp_path / "cut", on_cycle=stop_after_cycle_1)
    # the interruption happened where it was meant to: after cycle 1's checkpoint, before any cycle-2 phase
    assert seen == [0, 1] and phases[0] == "dense" and phases[-1] == "c1/release"
    assert not any(t.startswith("c2/") for t in phases)
    assert completed_cycles(tmp_path / "cut") == [0, 1]

    # interrupted again in the middle of cycle 2 (inside minimization): the cycle-1 checkpoint survives
    calls = {"n": 0}
    phases.clear()

    def failing_minimizer(model, ex):
        calls["n"] += 1
        if calls["n"] == 2:  # call 1 is the replay of cycle 1, call 2 is cycle 2's minimization
            raise Interrupt
        return mlp_minimize(model, ex)
    with pytest.raises(Interrupt):
        run(data, tmp_path / "cut", resume=True, minimizer=failing_minimizer)
    # it resumed (no dense training, no cycle-1 phase: they were restored) and stopped inside cycle 2's
    # minimization: cycle 2's pruning ran, its release fine-tuning did not
    assert calls["n"] == 2 and phases and all(t.startswith("c2/prune") for t in phases)
    assert completed_cycles(tmp_path / "cut") == [0, 1]
    assert not [p for p in (tmp_path / "cut").iterdir() if p.name.startswith(".sr-ir-tmp.")]

    phases.clear()
    resumed = run(data, tmp_path / "cut", resume=True)
    # the last resume trained only what was left: cycle 2 again (its checkpoint never got written) and 3
    assert phases[0].startswith("c2/prune") and "c2/release" in phases and phases[-1] == "c3/release"
    assert not any(t == "dense" or t.startswith("c1/") for t in phases)
    assert strip(resumed.records) == strip(whole.records)
    assert resumed.dense_record["val_acc"] == whole.dense_record["val_acc"]
    a, b = resumed.module.state_dict(), whole.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert completed_cycles(tmp_path / "cut") == completed_cycles(tmp_path / "whole")


def test_checkpoint_contents_and_refusals(data, tmp_path):
    run(data, tmp_path)
    c = load_cycle(cycle_path(tmp_path, 1))  # weights_only load
    assert c["cycle"] == 1 and c["record"]["cycle"] == 1 and c["config"]["seed"] == 0
    with pytest.raises(SrIrError, match="already holds checkpoints"):
        run(data, tmp_path)
    with pytest.raises(SrIrError, match="different settings"):
        run(data, tmp_path, resume=True, config=CycleConfig(**{**CFG.__dict__, "prune_epochs": 2}))
    cycle_path(tmp_path, 2).write_bytes(b"not a checkpoint")
    with pytest.raises(SrIrError, match="not a readable"):
        run(data, tmp_path, resume=True)


def test_finished_run_can_be_extended(data, tmp_path):
    short = run(data, tmp_path, config=CycleConfig(**{**CFG.__dict__, "max_cycles": 1}))
    assert short.stopped == "max-cycles" and len(short.records) == 1
    longer = run(data, tmp_path, resume=True)
    whole = run(data)
    assert strip(longer.records) == strip(whole.records)


def test_without_release_the_zeros_stay_zero(data):
    cfg = CycleConfig(**{**CFG.__dict__, "release": False, "max_cycles": 2})
    res = run(data, config=cfg)
    assert res.records[0]["release"] is None
    assert all(r["released_val_acc"] is not None or r is res.records[-1] for r in res.records)
    # the module after masked fine-tuning still has the zeros minimization left inside it
    zeros = sum(int((p == 0).sum()) for n, p in res.module.named_parameters() if p.dim() == 2)
    assert zeros > 0


def test_stops_when_nothing_is_removed(data):
    cfg = CycleConfig(**{**CFG.__dict__, "max_cycles": 10, "max_drop": 0.0, "max_prune_steps": 1, "backoff": 0})
    res = run(data, config=cfg)
    assert res.stopped == "no-unit-removed"
    last = res.records[-1]
    assert last["units_removed_total"] == 0 and last["release"] is None


def test_verification_failure_stops_the_run(data):
    def lying_minimizer(model, ex):
        out = mlp_minimize(model, ex)
        with torch.no_grad():
            out.module.layers[-1].bias.add_(1.0)
        return out
    with pytest.raises(VerificationError):
        run(data, minimizer=lying_minimizer)


def test_check_same_function_reports_rounding_level():
    torch.manual_seed(0)
    a = TinyMLP()
    b = copy.deepcopy(a)
    errs = check_same_function(a, b, [torch.randn(5, 64)], 1e-6)
    assert errs["max_abs_err"] == 0.0


def test_prune_only_restricts_pruning_to_matching_tensors(data):
    cfg = CycleConfig(**{**CFG.__dict__, "max_cycles": 1, "prune_only": r"fc2\."})
    res = run(data, config=cfg)
    assert set(res.records[0]["units_removed"]) <= {"layers.0", "layers.1", "input"}
    assert res.records[0]["units_removed"].get("input", 0) == 0  # fc1's columns were never pruned
    with pytest.raises(SrIrError, match="no prunable parameter"):
        run(data, config=CycleConfig(**{**CFG.__dict__, "prune_only": "nothing-matches"}))


def test_equal_budget_mode_runs_every_cycle(data):
    cfg = CycleConfig(**{**CFG.__dict__, "max_cycles": 3, "max_drop": 0.0, "max_prune_steps": 1, "backoff": 0,
                         "stop_on_no_removal": False})
    res = run(data, config=cfg)
    assert res.stopped == "max-cycles" and len(res.records) == 3
    assert all(r["released_val_acc"] is not None for r in res.records)  # fine-tuned every cycle
