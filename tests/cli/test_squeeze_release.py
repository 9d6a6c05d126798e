"""`sr-ir squeeze-release` on a user's own model (`module:factory` from its own folder) and data (`.npz`,
`--dataset fashion-mnist`); the Python cycle with a preset writes the same files as the CLI."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from sr_ir.cli.main import main
from sr_ir.cycle import CycleConfig, load_npz, squeeze_release
from sr_ir.cycle.data import FASHION_MNIST_DIR, FASHION_MNIST_ENV, FASHION_MNIST_FILES

from ..cycle.test_data import tiny_fashion

MODEL_SOURCE = textwrap.dedent('''
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self, inputs=12, classes=3):
            super().__init__()
            self.hidden = nn.Linear(inputs, 16)
            self.out = nn.Linear(16, classes)

        def forward(self, x):
            return self.out(torch.relu(self.hidden(x)))


    def factory():
        torch.manual_seed(0)
        return Net()


    def narrow():  # two outputs for three classes
        torch.manual_seed(0)
        return Net(classes=2)
''')

# a short run of the unit preset: 2 cycles at most, a few batches each
SCHEDULE = {"dense_epochs": 3, "max_cycles": 2, "prune_epochs": 0.5, "release_epochs": 0.5, "max_prune_steps": 2,
            "max_drop": 5.0, "prune_amount": 0.3}
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in SCHEDULE.items()] + ["--batch-size", "32", "--threads", "1",
                                                                          "--no-progress"]
RUN_FILES = {".sr-ir.lock", "cycles.json", "cycles.txt", "cycles.png", "final.safetensors", "final.pt2"}


def user_folder(tmp: Path, splits: bool = True) -> Path:
    """mymodel.py and mydata.npz as a user has them: 3 separable classes of 12 features."""
    (tmp / "mymodel.py").write_text(MODEL_SOURCE)
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(3, 12))

    def draw(n):
        y = np.repeat(np.arange(3), n // 3)
        return (centers[y] + rng.normal(size=(len(y), 12))).astype(np.float32), y
    arrays = {}
    for split, n in (("train", 240), ("val", 60), ("test", 60)):
        if split == "train" or splits:
            arrays[f"x_{split}"], arrays[f"y_{split}"] = draw(n)
    np.savez(tmp / "mydata.npz", **arrays)
    return tmp


def without_times(obj):
    """A run's JSON without its wall-clock entries."""
    if isinstance(obj, dict):
        return {k: without_times(v) for k, v in obj.items() if k not in ("time_s", "wall_s")}
    if isinstance(obj, list):
        return [without_times(v) for v in obj]
    return obj


def test_python_cycle_with_a_preset_writes_what_the_cli_writes(tmp_path, monkeypatch, capsys):
    folder = user_folder(tmp_path)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    import mymodel  # the user's own module, from the user's own folder

    data = load_npz(folder / "mydata.npz")
    train = DataLoader(data.train, batch_size=32, shuffle=True)  # the batch size the run takes
    val, test = DataLoader(data.val, batch_size=100), DataLoader(data.test, batch_size=100)
    cfg = CycleConfig.preset("unit", **SCHEDULE)
    res = squeeze_release(mymodel.factory(), train, val, test=test, example_inputs=(data.val[:8][0],), config=cfg,
                          checkpoint_dir=folder / "py", progress=False,
                          info={"model": "mymodel:factory", "dataset": "mydata.npz", "preset": "unit"})
    assert res.records[0]["units_removed_total"] > 0 and res.config.train.batch_size == 32

    assert main(["squeeze-release", "mymodel:factory", "--data", "mydata.npz", "--out", "cli", *FLAGS]) == 0
    printed = capsys.readouterr().out

    py, cli = folder / "py", folder / "cli"
    cycles = {f"cycle_{k:03d}.pt" for k in range(len(res.records) + 1)}
    assert set(os.listdir(py)) == set(os.listdir(cli)) == RUN_FILES | cycles
    a, b = json.loads((py / "cycles.json").read_text()), json.loads((cli / "cycles.json").read_text())
    assert without_times(a) == without_times(b)  # the same run: same config, records, best state
    assert a["config"]["train"]["batch_size"] == 32 and a["config"] == CycleConfig.preset("unit", batch_size=32,
                                                                                          **SCHEDULE).to_dict()
    assert without_times(a) == without_times(json.loads(json.dumps(res.summary)))
    wa, wb = load_file(str(py / "final.safetensors")), load_file(str(cli / "final.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert sum(t.numel() for t in wa.values()) == res.records[-1]["params"]
    # the table: the file and what the CLI printed agree (wall-clock seconds aside)
    def untimed(text):
        return re.sub(r"\b\d+s\b|\d+ s\b", "T", text)
    table = untimed((cli / "cycles.txt").read_text())
    assert untimed((py / "cycles.txt").read_text()) == table and table.startswith(untimed(res.table()))
    assert untimed(printed).startswith(table) and "units removed:" in table  # printed: cycles.txt, then 'wrote ...'
    # final.pt2 runs at any batch size and computes what the final module does
    program = torch.export.load(str(cli / "final.pt2")).module()
    assert a["export_batch"] == "dynamic" and a["export_error"] is None
    for n in (3, 11):
        x = torch.randn(n, 12)
        torch.testing.assert_close(program(x), res.module(x), rtol=0, atol=0)


def test_cli_with_a_user_model_and_data_from_a_fresh_shell(tmp_path):
    folder = user_folder(tmp_path, splits=False)  # only x_train/y_train: validation and test held out
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", FASHION_MNIST_ENV)}
    sr_ir = Path(sys.executable).with_name("sr-ir")
    r = subprocess.run([str(sr_ir), "squeeze-release", "mymodel:factory", "--data", "mydata.npz", "--out", "run",
                        *FLAGS, "--max-cycles", "1"], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "note: mydata.npz has no x_test/y_test: held out 24 examples" in r.stderr
    assert "note: mydata.npz has no x_val/y_val: held out 21 examples" in r.stderr
    assert "units removed:" in r.stdout and "wrote run/cycles.json" in r.stdout and "final.pt2 (dynamic batch)" in r.stdout
    summary = json.loads((folder / "run" / "cycles.json").read_text())
    assert summary["model"] == "mymodel:factory" and summary["dataset"] == "mydata.npz"
    assert len(summary["data_notes"]) == 2 and summary["cycles"][0]["params"] < summary["dense"]["params"]
    assert RUN_FILES | {"cycle_000.pt", "cycle_001.pt"} == set(os.listdir(folder / "run"))


@pytest.mark.parametrize("argv, message", [
    (["mymodel:factory", "--data", "bad.npz"], "bad.npz: no y_train (it holds x_train)"),
    (["mymodel:factory", "--data", "wide.npz"],
     "mymodel:factory: the model's forward fails on a batch of the data of shape 3x10 (RuntimeError: "),
    (["mymodel:narrow", "--data", "mydata.npz"],
     "mymodel:narrow: gives 8x2 on a batch of shape 8x12; expected class scores of shape 8x3 or wider"),
    (["nosuchmodule:factory", "--data", "mydata.npz"], "cannot import 'nosuchmodule'"),
    (["lenet300-100", "--weights", "w.safetensors"], "--weights is for a package.module:factory model"),
    (["lenet300-100", "--model", "convnext-test"], "two models given: lenet300-100 and --model convnext-test"),
    (["my_model", "--data", "mydata.npz"], "'my_model': expected a bundled model"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    folder = user_folder(tmp_path)
    np.savez(folder / "bad.npz", x_train=np.zeros((4, 12), np.float32))
    np.savez(folder / "wide.npz", x_train=np.zeros((30, 10), np.float32), y_train=np.repeat(np.arange(3), 10))
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    assert main(["squeeze-release", *argv, "--out", "run", *FLAGS]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sr-ir squeeze-release: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (folder / "run" / "cycle_000.pt").exists()


def test_dataset_fashion_mnist_absent_is_one_line_naming_the_package(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "empty"))
    assert main(["squeeze-release", "--dataset", "fashion-mnist", "--out", str(tmp_path / "run"), *FLAGS]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "apt-get install -y dataset-fashion-mnist" in err
    assert f"{tmp_path / 'empty'} has no train-images-idx3-ubyte.gz" in err


def test_dataset_fashion_mnist_runs_from_its_idx_files(tmp_path, monkeypatch, capsys):
    tiny_fashion(tmp_path / "fm", per_class=24)  # the folder a user's $SR_IR_FASHION_MNIST names
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "fm"))
    out = tmp_path / "run"
    assert main(["squeeze-release", "--dataset", "fashion-mnist", "--out", str(out), "--json", *FLAGS,
                 "--max-cycles", "1", "--dense-epochs", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset"] == "fashion-mnist" and summary["model"] == "lenet300-100"
    assert summary["dense"]["params"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert RUN_FILES <= set(os.listdir(out))


@pytest.mark.skipif(not all((FASHION_MNIST_DIR / n).is_file() for n in FASHION_MNIST_FILES),
                    reason=f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR}; apt-get install -y dataset-fashion-mnist)")
def test_dataset_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    out = tmp_path / "run"
    # a few batches of each phase on the full 55,000 / 5,000 / 10,000 split
    assert main(["squeeze-release", "--dataset", "fashion-mnist", "--out", str(out), "--json", "--threads", "1",
                 "--no-progress", "--dense-epochs", "0.03", "--max-cycles", "1", "--prune-epochs", "0.005",
                 "--release-epochs", "0.005", "--max-prune-steps", "1", "--max-drop", "100", "--prune-amount", "0.5",
                 "--batch-size", "256"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dense"]["val_acc"] > 0.5  # 6 batches of dense training on the real images
    assert summary["cycles"][0]["params"] < summary["dense"]["params"]
