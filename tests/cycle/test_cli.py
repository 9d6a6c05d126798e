"""`sr-ir squeeze-release` on scikit-learn digits with small settings (the MLP test-double minimizer)."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

import sr_ir.cycle.cycle as cycle_mod
from sr_ir.cli.main import main

from .mlp_minimizer import mlp_minimize

ARGS = ["squeeze-release", "--dataset", "digits", "--dense-epochs", "4", "--max-cycles", "2", "--prune-epochs", "0.5",
        "--max-prune-steps", "3", "--release-epochs", "0.5", "--max-drop", "3", "--prune-amount", "0.4",
        "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def test_double(monkeypatch):
    monkeypatch.setattr(cycle_mod, "default_minimizer", mlp_minimize)


def test_cli_json_table_plot_and_artefacts(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(ARGS + ["--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "cycle" in captured.err  # the table goes to stderr with --json
    assert summary["dense"]["cycle"] == 0 and summary["cycles"][0]["units_removed_total"] > 0
    for key in ("params", "bytes", "flops", "val_acc", "test_acc", "units_removed", "release", "time_s"):
        assert key in summary["cycles"][0]
    assert summary["export_error"] is None
    assert (out / "cycles.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "cycles.json").read_text())["cycles"] == summary["cycles"]
    state = load_file(str(out / "final.safetensors"))
    assert sum(t.numel() for t in state.values()) == summary["cycles"][-1]["params"]
    assert (out / "final.pt2").stat().st_size > 0 and summary["export_batch"] == "dynamic"
    table = (out / "cycles.txt").read_text()
    assert table.splitlines()[0].split()[0] == "cycle" and "units removed:" in table and "stopped:" in table
    assert sorted(p.name for p in out.glob("cycle_*.pt")) == [f"cycle_{k:03d}.pt" for k in range(len(summary["cycles"]) + 1)]


def test_cli_resume_and_one_line_errors(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(ARGS + ["--out", str(out), "--max-cycles", "1"]) == 0
    table = capsys.readouterr().out
    assert "units removed" in table and "wrote" in table
    assert main(ARGS + ["--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sr-ir squeeze-release: error:") and "--resume" in err and len(err.strip().splitlines()) == 1
    assert main(ARGS + ["--out", str(out), "--resume", "--lr", "0.01"]) == 1
    assert "different settings" in capsys.readouterr().err
    assert main(ARGS + ["--out", str(out), "--resume"]) == 0  # extends the finished run to 2 cycles
    assert main(["squeeze-release", "--model", "convnext-test", "--dataset", "digits", "--out", str(tmp_path / "c")]) == 1
    assert "28x28" in capsys.readouterr().err


def test_cli_help_lists_the_knobs(capsys):
    with pytest.raises(SystemExit):
        main(["squeeze-release", "--help"])
    text = capsys.readouterr().out
    for flag in ("--resume", "--no-release", "--preset", "--json", "--max-drop", "--criterion", "--l1", "--schedule"):
        assert flag in text
