"""Coupled channel groups read from the IR, the coupled pruning criterion, and a cycle that uses it."""
from __future__ import annotations

import pytest
import torch

from sr_ir.cycle import CycleConfig, PruneSpec, TrainSpec, digits, squeeze_release
from sr_ir.cycle.channel_groups import channel_groups, channel_scores, group_penalty
from sr_ir.cycle.cycle import removed_units
from sr_ir.cycle.pruning import apply_masks, full_masks, prune_step
from sr_ir.errors import SrIrError
from sr_ir.minimization import minimize
from sr_ir.models.convnext import convnext_small_test
from sr_ir.models.lenet import lenet300_100

from .test_cycle import TinyMLP


def test_lenet_groups_are_hidden_units_and_pixels_never_logits():
    groups = channel_groups(lenet300_100(), (torch.randn(2, 784),))
    got = {g.slices: g.size for g in groups}
    assert got == {
        (("fc1.bias", 0), ("fc1.weight", 0), ("fc2.weight", 1)): 300,
        (("fc2.bias", 0), ("fc2.weight", 0), ("fc3.weight", 1)): 100,
        (("fc1.weight", 1),): 784,  # network inputs: unread pixels are gathered
    }


def _convnext() -> torch.nn.Module:
    torch.manual_seed(0)
    m = convnext_small_test().double().eval()
    with torch.no_grad():  # nonzero biases and layer scales: every pruned entry matters
        for p in m.parameters():
            if p.dim() == 1:
                p.normal_(0.5, 0.3)
    return m


def test_convnext_stream_group_spans_every_writer_norm_and_reader_of_a_stage():
    groups = channel_groups(_convnext(), (torch.randn(2, 3, 32, 32, dtype=torch.float64),))
    stage0 = next(g for g in groups if ("downsample_layers.0.0.weight", 0) in g.slices)
    names = set(stage0.names())
    assert {"downsample_layers.0.0.bias", "downsample_layers.0.1.weight", "downsample_layers.0.1.bias",
            "stages.0.0.dwconv.weight", "stages.0.0.norm.weight", "stages.0.0.gamma",
            "stages.0.0.pwconv2.weight", "stages.0.0.pwconv2.bias", "downsample_layers.1.0.weight"} <= names
    assert ("stages.0.0.pwconv1.weight", 1) in stage0.slices and ("downsample_layers.1.1.weight", 1) in stage0.slices
    assert not any(n.startswith("head.") and a == 0 for g in groups for n, a in g.slices)  # logits are pinned


def test_coupled_pruning_kills_stream_channels_that_minimize_removes_exactly():
    model = _convnext()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    groups = channel_groups(model, (x,))
    masks = prune_step(model, full_masks(model, vectors=True), PruneSpec(0.25, "coupled", "layer"), groups=groups)
    apply_masks(model, masks)
    streams = [g for g in groups if any(n.endswith(".gamma") for n, _ in g.slices)]
    dead = sum(int((channel_scores(dict(model.named_parameters()), g) == 0).sum()) for g in streams)
    assert dead == sum(int(0.25 * g.size) for g in streams) > 0
    res = minimize(model, (x,))
    stream = [g for g in res.report.groups if any(t.endswith(".gamma[axis 0]") for t in g["tensors"])]
    assert sum(g["removed"] for g in stream) == dead
    units = removed_units(res.report)  # what the cycle's table counts: units per group
    assert sum(units[g["group"]] for g in stream) == dead
    y = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    assert float((res.module(y) - model(y)).abs().max() / model(y).abs().max()) <= 1e-12


def test_coupled_needs_groups_and_penalty_is_differentiable():
    model = TinyMLP()
    with pytest.raises(SrIrError, match="channel groups"):
        prune_step(model, full_masks(model, vectors=True), PruneSpec(0.2, "coupled"))
    groups = channel_groups(model, (torch.randn(2, 64),))
    pen = group_penalty(model, groups)
    pen.backward()
    assert pen.item() > 0 and model.fc1.bias.grad is not None and model.fc3.bias.grad is None  # logits group pinned


def test_a_cycle_with_the_coupled_criterion_removes_units_and_verifies():
    d = digits()
    torch.manual_seed(0)
    cfg = CycleConfig(max_cycles=1, max_drop=3.0, dense_epochs=6, prune=PruneSpec(0.3, "coupled", "layer"),
                      prune_epochs=1, max_prune_steps=2, release_epochs=1,
                      train=TrainSpec(batch_size=64, lr=3e-3, group_lasso=1e-3))
    res = squeeze_release(TinyMLP(), d.train, d.val, example_inputs=(d.val[:8][0],), config=cfg, progress=False)
    r = res.records[0]
    assert r["units_removed_total"] > 0 and r["params"] < res.dense_record["params"]
    assert r["max_rel_err"] < 1e-5


def test_cli_coupled_on_a_convnext_removes_residual_channels(tmp_path, capsys):
    import json

    from sr_ir.cli.main import main

    args = ["squeeze-release", "--model", "convnext-test", "--criterion", "coupled", "--max-cycles", "1",
            "--dense-epochs", "1", "--prune-epochs", "0.2", "--release-epochs", "0.2", "--max-prune-steps", "2",
            "--threads", "1", "--no-progress", "--json", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    r = json.loads(capsys.readouterr().out)["cycles"][0]
    # a stream group is named by its first parameter: the stem or a downsampling conv's bias
    assert any(k.startswith("downsample_layers.") and v > 0 for k, v in r["units_removed"].items())
    assert r["max_rel_err"] < 1e-5
