"""The cycle with the real minimizer (sr_ir.minimize): two cycles on a tiny MLP, verified and resumable."""
from __future__ import annotations

import torch

from sr_ir.cycle import CycleConfig, PruneSpec, TrainSpec, digits, squeeze_release

from .test_cycle import TinyMLP, strip


def _run(tmp, resume=False, on_cycle=None):
    d = digits()
    torch.manual_seed(0)
    cfg = CycleConfig(max_cycles=2, max_drop=3.0, dense_epochs=8, prune=PruneSpec(0.4, "unit", "layer"),
                      prune_epochs=1, max_prune_steps=2, release_epochs=1, train=TrainSpec(batch_size=64, lr=3e-3))
    return squeeze_release(TinyMLP(), d.train, d.val, example_inputs=(d.val[:8][0],), config=cfg,
                           checkpoint_dir=tmp, resume=resume, on_cycle=on_cycle, progress=False)


def test_two_cycles_with_sr_ir_minimize_and_resume(tmp_path):
    whole = _run(tmp_path / "a")
    r1 = whole.records[0]
    assert r1["units_removed_total"] > 0 and r1["params"] < whole.dense_record["params"]
    assert all(r["max_rel_err"] < 1e-5 for r in whole.records)
    # the emitted module of cycle 1 was pruned, minimized and verified again in cycle 2
    assert whole.records[1]["params"] <= r1["params"]

    class Stop(Exception):
        pass

    def stop(r):
        if r["cycle"] == 1:
            raise Stop
    try:
        _run(tmp_path / "b", on_cycle=stop)
    except Stop:
        pass
    resumed = _run(tmp_path / "b", resume=True)  # rebuilds cycle 1's generated module by replay
    assert strip(resumed.records) == strip(whole.records)
    a, b = resumed.module.state_dict(), whole.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
