"""Every way a command can fail ends in one line on stderr, no traceback, and a documented exit code
(sr_ir/cli/main.py: 1 input error, 2 usage, 4 verification refused, 70 internal error, 130 interrupted)."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import sr_ir.cli.show as show_cmd
import sr_ir.cycle.cycle as cycle_mod
from sr_ir.cli.main import EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, main

from ..cycle.mlp_minimizer import mlp_minimize

SPEC = f"{__name__}:factory"
SMALL_SR = """graph g(%x: f32[N, 4]) -> (f32[N, 2]) {
  param @w: f32[2, 4]
  %y = linear(%x, @w, none) : f32[N, 2]
  return %y
}
"""
# The index 7 is out of range for 4 channels: the type checker cannot see values, the run can.
BAD_GATHER_SR = """graph g(%x: f32[N, 4]) -> (f32[N, 2]) {
  param @idx: i64[2]
  param @w: f32[2, 2]
  %g = gather(%x, @idx, dim=1) : f32[N, 2]
  %y = linear(%g, @w, none) : f32[N, 2]
  return %y
}
"""


class Broken(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        raise ValueError("the model's own bug")


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else -self.fc(x)  # torch.export cannot trace a branch on values


def factory() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def broken() -> nn.Module:
    return Broken()


def data_dependent() -> nn.Module:
    return DataDependent()


def example_inputs():
    return (torch.randn(2, 4),)


def one_line(capsys, argv: list[str], code: int) -> str:
    """Run the CLI; assert the exit code and a single stderr line without a traceback; return it."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sr-ir {argv[0]}: "), err
    return lines[0]


def write_sr(folder: Path, text: str, weights: dict[str, torch.Tensor], name: str = "m.sr") -> Path:
    sr = folder / name
    sr.write_text(text)
    save_file(weights, str(sr.with_suffix(".safetensors")))
    return sr


@pytest.fixture
def small_sr(tmp_path) -> Path:
    return write_sr(tmp_path, SMALL_SR, {"w": torch.randn(2, 4)})


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch) -> Path:
    """A folder nothing can be created in. Root ignores the mode bits, so there the file system's
    refusal is simulated where entries are created in it (os.open with O_CREAT, os.mkdir)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):
        real_open, real_mkdir = os.open, os.mkdir

        def refuse(path) -> None:
            if Path(path).parent == ro:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        def refusing_open(path, flags, *args, **kwargs):
            if flags & os.O_CREAT:
                refuse(path)
            return real_open(path, flags, *args, **kwargs)

        def refusing_mkdir(path, *args, **kwargs):
            refuse(path)
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", refusing_open)
        monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    yield ro
    ro.chmod(0o755)


def test_corrupt_or_truncated_weights_beside_a_program(small_sr, capsys):
    weights = small_sr.with_suffix(".safetensors")
    whole = weights.read_bytes()
    for damaged in (b"not a safetensors file at all", whole[: len(whole) // 2]):
        weights.write_bytes(damaged)
        for cmd in ("show", "minimize"):
            line = one_line(capsys, [cmd, str(small_sr)], EXIT_ERROR)
            assert f"{weights}: not a readable safetensors file" in line


def test_unwritable_output_folder_names_the_output(small_sr, read_only_dir, capsys):
    for argv, out in ((["lower", str(small_sr), "-o"], "m.sr"), (["minimize", str(small_sr), "--quiet", "-o"], "m.sr"),
                      (["emit", str(small_sr), "--pt2"], "m.pt2"), (["emit", str(small_sr), "--python"], "m.py")):
        target = read_only_dir / out
        line = one_line(capsys, argv + [str(target)], EXIT_ERROR)
        written = target.with_suffix(".safetensors") if out == "m.py" else target  # the weights go first
        assert f"cannot write {written}: {os.strerror(errno.EACCES)}" in line
    assert not list(read_only_dir.iterdir())


def test_weights_of_the_wrong_shape_for_a_factory(tmp_path, capsys):
    w = tmp_path / "w.safetensors"
    save_file({"0.weight": torch.zeros(5, 4), "0.bias": torch.zeros(5), "2.weight": torch.zeros(2, 3),
               "2.bias": torch.zeros(2)}, str(w))
    line = one_line(capsys, ["minimize", SPEC, "--weights", str(w)], EXIT_ERROR)
    assert f"{w} does not match {SPEC}: " in line and "0.weight is (5, 4) in the file, (3, 4) in the model" in line


def test_wrong_input_shape_and_a_failing_forward(capsys):
    line = one_line(capsys, ["minimize", SPEC, "--input-shape", "2x5"], EXIT_ERROR)
    assert "forward fails on example inputs of shape 2x5" in line and "mat1 and mat2" in line
    for cmd in ("minimize", "lower"):
        line = one_line(capsys, [cmd, f"{__name__}:broken"], EXIT_ERROR)
        assert "ValueError: the model's own bug" in line
    assert "expected positive dims" in one_line(capsys, ["lower", SPEC, "--input-shape", "2x0"], EXIT_ERROR)


def test_a_model_torch_export_cannot_trace(capsys):
    # torch.export prints the partial graph of a failed trace; only the one line remains
    line = one_line(capsys, ["minimize", f"{__name__}:data_dependent"], EXIT_ERROR)
    assert "torch.export failed: Could not guard on data-dependent expression" in line


def test_a_factory_in_the_current_folder_imports_like_python_m(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_folder_model.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def factory():\n    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))\n\n"
        "def example_inputs():\n    return (torch.randn(2, 4),)\n")
    monkeypatch.chdir(tmp_path)
    # the console script's sys.path: no entry for the current folder (restored after the test)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p and Path(p).resolve() != tmp_path.resolve()])
    monkeypatch.delitem(sys.modules, "my_folder_model", raising=False)
    assert main(["show", "my_folder_model:factory"]) == 0, capsys.readouterr().err
    assert "# total: 23 parameters" in capsys.readouterr().out
    monkeypatch.delitem(sys.modules, "my_folder_model")


def test_a_failure_inside_the_generated_module_names_the_ir_node(tmp_path, capsys):
    sr = write_sr(tmp_path, BAD_GATHER_SR, {"idx": torch.tensor([0, 7]), "w": torch.randn(2, 2)})
    line = one_line(capsys, ["minimize", str(sr), "--quiet"], EXIT_ERROR)
    assert f"{sr}:4:3: %g = gather(%x, @idx, dim=1) : f32[N, 2]: fails when run: " in line


def test_a_bug_is_one_line_with_its_own_code_and_traceback_on_request(small_sr, monkeypatch, capsys):
    def bug(prog):
        raise RuntimeError("an sr-ir bug\nwith a second line")

    monkeypatch.setattr(show_cmd, "op_sizes", bug)
    line = one_line(capsys, ["show", str(small_sr)], EXIT_INTERNAL)
    assert line == "sr-ir show: internal error: RuntimeError: an sr-ir bug (run with --traceback for details)"
    for argv in (["--traceback", "show", str(small_sr)], ["show", str(small_sr), "--traceback"]):
        assert main(argv) == EXIT_INTERNAL
        err = capsys.readouterr().err
        assert err.startswith("Traceback (most recent call last):") and "in bug" in err
        assert err.strip().splitlines()[-1] == "sr-ir show: internal error: RuntimeError: an sr-ir bug"


def test_interrupt_and_usage_codes(small_sr, monkeypatch, capsys):
    def interrupted(prog):
        raise KeyboardInterrupt

    monkeypatch.setattr(show_cmd, "op_sizes", interrupted)
    assert one_line(capsys, ["show", str(small_sr)], EXIT_INTERRUPTED) == "sr-ir show: interrupted"
    assert main([]) == EXIT_USAGE
    with pytest.raises(SystemExit) as e:
        main(["show", "--no-such-option"])
    assert e.value.code == EXIT_USAGE


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code in ("0 ", "1 ", "2 ", "4 ", "70 ", "130 "):
        assert f"\n  {code}" in out
    assert "--traceback" in out


# squeeze-release on scikit-learn digits with the MLP test double, as small as a run with a cycle 1 gets
RUN = ["squeeze-release", "--dataset", "digits", "--dense-epochs", "0", "--max-cycles", "1", "--prune-epochs", "0.25",
       "--max-prune-steps", "1", "--release-epochs", "0.25", "--max-drop", "100", "--prune-amount", "0.4",
       "--threads", "1", "--no-progress"]


def _rewrite_checkpoint(path: Path, change) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def test_resume_refuses_a_foreign_or_mismatched_checkpoint_after_cycle_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cycle_mod, "default_minimizer", mlp_minimize)
    out = tmp_path / "run"
    assert main(RUN + ["--out", str(out)]) == 0
    capsys.readouterr()
    ckpt = out / "cycle_001.pt"
    original = ckpt.read_bytes()
    resume = RUN + ["--out", str(out), "--resume", "--max-cycles", "2"]

    _rewrite_checkpoint(ckpt, lambda p: p.update(config=p["config"].replace('"seed": 0', '"seed": 1')))
    assert "not cycle 1 of this run (its settings differ: seed)" in one_line(capsys, resume, EXIT_ERROR)

    ckpt.write_bytes(original)
    _rewrite_checkpoint(ckpt, lambda p: p.update(state={k: v[:1] for k, v in p["state"].items()}))
    assert f"{ckpt}: does not fit the model rebuilt from the earlier cycles (size mismatch" in \
        one_line(capsys, resume, EXIT_ERROR)

    ckpt.write_bytes(original[: len(original) // 2])
    assert f"{ckpt}: not a readable squeeze-release checkpoint" in one_line(capsys, resume, EXIT_ERROR)
