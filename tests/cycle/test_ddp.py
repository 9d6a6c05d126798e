"""Data-parallel fine-tuning: 2 gloo processes on CPU reproduce the single-process run."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from sr_ir.cycle import CycleConfig, PruneSpec, TrainSpec, digits, squeeze_release
from sr_ir.cycle import ddp
from sr_ir.cycle.pruning import full_masks, prune_step
from sr_ir.cycle.run_files import FILES as RUN_FILES
from sr_ir.cycle.train import fine_tune

from .mlp_minimizer import mlp_minimize

SPEC = TrainSpec(epochs=2, lr=3e-3, batch_size=64, distill=0.3, group_lasso=1e-4)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))


def _data():
    d = digits()
    x, y = d.train.tensors
    n = (len(y) // SPEC.batch_size) * SPEC.batch_size  # equal shards in every batch
    return torch.utils.data.TensorDataset(x[:n], y[:n])


def _fine_tune_once(out_path: str | None):
    torch.set_num_threads(1)
    model, teacher = _model(), _model()
    masks = prune_step(model, full_masks(model), PruneSpec(0.5))
    fine_tune(model, _data(), SPEC, seed=7, tag="t", masks=masks, teacher=teacher, lasso_names=list(masks))
    if out_path is not None and ddp.is_main():
        torch.save(model.state_dict(), out_path)
    return model.state_dict()


def _worker(rank: int, world: int, init_file: str, out: str, what: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if what == "fine_tune":
            _fine_tune_once(out)
        else:
            _cycle(out)
    finally:
        dist.destroy_process_group()


def _cycle(out: str):
    torch.set_num_threads(1)
    d = digits()
    cfg = CycleConfig(max_cycles=2, max_drop=5.0, dense_epochs=8, prune=PruneSpec(0.3), prune_epochs=1,
                      max_prune_steps=2, release_epochs=1, train=TrainSpec(batch_size=64, lr=3e-3))
    res = squeeze_release(_model(), d.train, d.val, example_inputs=(d.val[:8][0],), config=cfg,
                          minimizer=mlp_minimize, checkpoint_dir=os.path.join(out, "ck"), progress=False)
    with open(os.path.join(out, f"rank{ddp.rank()}.json"), "w") as f:
        json.dump([r["params"] for r in res.records], f)


def _spawn(tmp_path, what: str, out: str):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), out, what), nprocs=2, join=True)


def test_two_process_fine_tune_matches_one_process(tmp_path):
    single = _fine_tune_once(None)
    _spawn(tmp_path, "fine_tune", str(tmp_path / "ddp.pt"))
    both = torch.load(tmp_path / "ddp.pt", weights_only=True)
    worst = max(float((single[k] - both[k]).abs().max()) for k in single)
    assert worst < 1e-5, worst  # same batches, averaged gradients: float rounding only
    for k in single:  # the pruned weights stayed exactly zero in both
        assert torch.equal(single[k] == 0, both[k] == 0) or k.endswith("bias")


@pytest.mark.slow
def test_cycle_runs_data_parallel_and_only_rank0_writes(tmp_path):
    _spawn(tmp_path, "cycle", str(tmp_path))
    p0 = json.loads((tmp_path / "rank0.json").read_text())
    p1 = json.loads((tmp_path / "rank1.json").read_text())
    assert p0 == p1 and p0[0] < 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    # rank 0 alone wrote the run's files: one checkpoint per cycle, the run's outputs, and no temporaries
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == sorted(
        [f"cycle_{i:03d}.pt" for i in range(len(p0) + 1)] + [".sr-ir.lock", *RUN_FILES])
    summary = json.loads((tmp_path / "ck" / "cycles.json").read_text())
    assert summary["processes"] == 2 and [r["params"] for r in summary["cycles"]] == p0
