"""One definition of the presets (CycleConfig.preset is what the CLI runs), the batch size taken from the
DataLoader, progress bars with totals, and the plot's floor line drawn where the floor was checked."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import sr_ir.cycle.cycle as cycle_mod
from sr_ir.cli.main import build_parser
from sr_ir.cli.squeeze_release import build_config
from sr_ir.cycle import PRESETS, CycleConfig, PruneSpec, TrainSpec, digits, resolve_batch_size, squeeze_release
from sr_ir.cycle.report import plot_cycles
from sr_ir.cycle.train import DEFAULT_BATCH_SIZE, batches_per_phase, fine_tune
from sr_ir.errors import SrIrError

from .mlp_minimizer import mlp_minimize
from .test_cycle import fresh


def cli_config(*flags: str) -> CycleConfig:
    return build_config(build_parser("squeeze-release").parse_args(["squeeze-release", *flags]))


@pytest.mark.parametrize("name", ["unit", "coupled", "faithful"])
def test_each_preset_is_what_the_cli_runs(name):
    assert cli_config("--preset", name) == CycleConfig.preset(name)


def test_the_cli_default_is_the_unit_preset_and_flags_override_it():
    assert cli_config() == CycleConfig.preset("unit")
    got = cli_config("--preset", "faithful", "--lr", "0.01", "--criterion", "unit", "--no-release",
                     "--max-cycles", "3", "--batch-size", "64", "--seed", "5", "--dense-epochs", "0")
    # --batch-size sizes the CLI's DataLoader, the config leaves it to the loader
    assert got == CycleConfig.preset("faithful", lr=0.01, criterion="unit", release=False, max_cycles=3, seed=5,
                                     dense_epochs=0)
    assert got.train.batch_size is None and got.prune == PruneSpec(0.2, "unit", "global")


def test_the_cli_sets_the_training_regularizers_and_schedule():
    got = cli_config("--preset", "faithful", "--l1", "1e-4", "--weight-decay", "1e-3", "--schedule", "cosine")
    assert got == CycleConfig.preset("faithful", l1=1e-4, weight_decay=1e-3, schedule="cosine")
    assert (got.train.l1, got.train.weight_decay, got.train.schedule) == (1e-4, 1e-3, "cosine")
    with pytest.raises(SrIrError, match="^--l1 must be >= 0$"):
        cli_config("--l1", "-1")
    with pytest.raises(SrIrError, match="^--weight-decay must be >= 0$"):
        cli_config("--weight-decay", "-0.5")


def test_preset_values_pinned():
    u = CycleConfig.preset("unit")
    assert u.prune == PruneSpec(0.1, "unit", "layer") and (u.prune_epochs, u.release_epochs) == (6.0, 15.0)
    assert (u.max_cycles, u.max_prune_steps, u.backoff, u.max_drop, u.dense_epochs) == (25, 40, 2, 1.0, 20.0)
    assert u.train == TrainSpec(lr=1e-3, batch_size=None, distill=0.7, group_lasso=5e-3) and u.release
    c = CycleConfig.preset("coupled")
    assert c == CycleConfig.preset("unit", criterion="coupled")
    f = CycleConfig.preset("faithful")
    assert f.prune == PruneSpec(0.2, "magnitude", "global") and (f.prune_epochs, f.release_epochs) == (2.0, 4.0)
    assert (f.max_cycles, f.max_prune_steps) == (8, 20) and f.train.distill == 0 and f.train.group_lasso == 0
    assert set(PRESETS) == {"unit", "coupled", "faithful"}


def test_preset_errors_are_one_line():
    with pytest.raises(SrIrError, match="unknown preset 'fast'; choose one of unit, coupled, faithful"):
        CycleConfig.preset("fast")
    with pytest.raises(SrIrError, match="unknown setting.s. learning_rate; known: "):
        CycleConfig.preset("unit", learning_rate=0.1)
    with pytest.raises(SrIrError, match="batch_size must be a positive integer"):
        CycleConfig.preset("unit", batch_size=0)


def test_batch_size_comes_from_the_dataloader_unless_the_config_sets_one():
    ds = TensorDataset(torch.zeros(10, 2), torch.zeros(10, dtype=torch.long))
    unit = CycleConfig.preset("unit", dense_train=TrainSpec(lr=0.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where nothing conflicts
        got = resolve_batch_size(unit, DataLoader(ds, batch_size=32))
        assert got.train.batch_size == 32 and got.dense_train.batch_size == 32
        assert resolve_batch_size(unit, ds).train.batch_size == DEFAULT_BATCH_SIZE
        set64 = CycleConfig.preset("unit", batch_size=64)
        assert resolve_batch_size(set64, DataLoader(ds, batch_size=64)).train.batch_size == 64
    with pytest.warns(UserWarning, match="the config's batch size 64 is used, not the DataLoader's 32"):
        assert resolve_batch_size(set64, DataLoader(ds, batch_size=32)).train.batch_size == 64


@pytest.mark.parametrize("epochs", [1.0, 1.5, 0.3])
def test_batches_per_phase_counts_what_fine_tune_does(epochs):
    d = digits()
    spec = TrainSpec(epochs=epochs, batch_size=100)
    ticks = []
    fine_tune(fresh(), d.train, spec, seed=0, tag="t", progress=ticks.append)
    assert len(ticks) == batches_per_phase(d.train, spec) > 0


class RecordingBar:
    """A stand-in for tqdm that remembers each bar's total and how far it got."""

    bars: list["RecordingBar"] = []

    def __init__(self, desc, total, **kw):
        self.desc, self.total, self.n = desc, total, 0
        RecordingBar.bars.append(self)

    def update(self, n):
        self.n += n

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def test_progress_bars_have_totals_and_reach_them(monkeypatch):
    d = digits()
    RecordingBar.bars = []
    monkeypatch.setattr(cycle_mod, "tqdm", RecordingBar)
    cfg = CycleConfig(max_cycles=1, max_drop=5.0, dense_epochs=1.5, prune=PruneSpec(0.3, "unit", "layer"),
                      prune_epochs=0.5, max_prune_steps=2, release_epochs=1, train=TrainSpec(lr=3e-3))
    squeeze_release(fresh(), DataLoader(d.train, batch_size=64), d.val, example_inputs=(d.val[:8][0],), config=cfg,
                    minimizer=mlp_minimize, progress=True)
    n_train = len(d.train)
    per_epoch = -(-n_train // 64)  # the DataLoader's batch size
    bars = RecordingBar.bars
    assert bars[0].desc == "dense" and bars[0].total == per_epoch + round(0.5 * per_epoch)
    assert [b.desc.split()[2] for b in bars[1:]][-1] == "release"
    assert all(b.total > 0 and b.n == b.total for b in bars), [(b.desc, b.n, b.total) for b in bars]


def test_plot_floor_line_is_the_validation_floor(tmp_path, monkeypatch):
    import matplotlib.axes

    lines = []
    real = matplotlib.axes.Axes.axhline
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline",
                        lambda self, y=0, *a, **k: lines.append((y, k.get("label"))) or real(self, y, *a, **k))
    # dense validation 91%, max_drop 2.5 points: the floor is 88.5%, nowhere near test 97% - 1 point
    dense = {"cycle": 0, "params": 1000, "val_acc": 0.91, "test_acc": 0.97, "floor": 0.885}
    recs = [{"cycle": 1, "params": 400, "val_acc": 0.9, "test_acc": 0.96, "released_val_acc": 0.905,
             "released_test_acc": 0.965}]
    plot_cycles(tmp_path / "p.png", dense, recs, baseline=recs[0])
    assert lines == [(pytest.approx(88.5, abs=1e-12), "validation floor (88.50%)")]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    # without a test set (test_acc None) the plot is still drawn
    plot_cycles(tmp_path / "q.png", {**dense, "test_acc": None},
                [{**recs[0], "test_acc": None, "released_test_acc": None}], baseline=recs[0])
    assert (tmp_path / "q.png").is_file()


def test_the_library_never_imports_the_cli():
    import ast
    from pathlib import Path

    import sr_ir.cycle

    for path in Path(sr_ir.cycle.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                name = "." * node.level + (node.module or "")
            elif isinstance(node, ast.Import):
                name = ",".join(a.name for a in node.names)
            else:
                continue
            assert not (name.startswith("..cli") or "sr_ir.cli" in name), f"{path.name} imports {name}"
