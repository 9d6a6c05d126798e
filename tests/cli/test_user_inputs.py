"""The CLI on a user's own things: `--rules` for every input kind (a `.sr` using a user's op), a
`module:factory` found in the current folder, one-line errors for a wrong `--input-shape` or output name,
and every output format of `minimize -o` (the library's writers)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

import sr_ir
from sr_ir.cli.main import EXIT_ERROR, main

USER_RULES = str(Path(__file__).resolve().parents[2] / "examples" / "rules_ext")  # declares mish
MISH_SR = """graph g(%x: f32[N, 4]) -> (f32[N, 2]) {
  param @fc.weight: f32[2, 4]
  param @fc.bias: f32[2]
  %a = mish(%x) : f32[N, 4]
  %y = linear(%a, @fc.weight, @fc.bias) : f32[N, 2]
  return %y
}
"""
MODEL_PY = """import torch
from torch import nn


def factory():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.Mish(), nn.Linear(3, 2))


def example_inputs():
    return (torch.randn(2, 4),)
"""


@pytest.fixture
def mish_sr(tmp_path) -> Path:
    path = tmp_path / "m.sr"
    g = torch.Generator().manual_seed(0)
    prog = sr_ir.parse(MISH_SR, "m.sr", check=False)
    prog.weights = {"fc.weight": torch.randn(2, 4, generator=g), "fc.bias": torch.randn(2, generator=g)}
    prog.save(str(path))
    return path


def one_line(capsys, argv: list[str], code: int = EXIT_ERROR) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_every_command_reads_a_sr_with_a_user_op_given_its_rules(mish_sr, tmp_path, capsys):
    shows = {"show": "= mish(%x)", "lower": "= mish(%x)", "emit": "F.mish(x)", "minimize": "verified float64"}
    for cmd in (["show"], ["lower"], ["emit", "--print"], ["minimize", "--quiet"]):
        line = one_line(capsys, [*cmd, str(mish_sr)])
        assert f"{mish_sr}:5:3: unknown op 'mish'" in line, cmd  # line 1 is the pair id
        assert main([*cmd, str(mish_sr), "--rules", USER_RULES]) == 0, cmd
        assert shows[cmd[0]] in capsys.readouterr().out, cmd
    outs = [tmp_path / f for f in ("small.sr", "small_py.py", "small.pt2")]
    assert main(["minimize", str(mish_sr), "--rules", USER_RULES, "--quiet", *[a for o in outs for a in ("-o", str(o))]]) == 0
    capsys.readouterr()
    prog = sr_ir.load(outs[0], rules=USER_RULES)
    x = torch.randn(3, 4, dtype=torch.float64)
    want = torch.nn.functional.linear(torch.nn.functional.mish(x), prog.weights["fc.weight"].double(),
                                      prog.weights["fc.bias"].double())
    ns: dict = {"__file__": str(outs[1])}
    exec(compile(outs[1].read_text(), str(outs[1]), "exec"), ns)
    for m in (ns["load"](), torch.export.load(str(outs[2])).module()):
        with torch.no_grad():
            got = m(x.float()).double()
        assert (got - want).abs().max() <= 1e-6 * want.abs().max()


def test_module_factory_from_the_current_folder_with_user_rules(tmp_path, monkeypatch, capsys):
    name = f"users_model_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(MODEL_PY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    monkeypatch.delitem(sys.modules, name, raising=False)
    line = one_line(capsys, ["lower", f"{name}:factory"])  # found, but its op needs the user's rules
    assert "unsupported op aten.mish.default" in line
    assert main(["lower", f"{name}:factory", "--rules", USER_RULES, "-o", "m.sr"]) == 0
    assert "wrote m.sr" in capsys.readouterr().out
    assert [n.op for n in sr_ir.load(tmp_path / "m.sr", rules=USER_RULES).nodes] == ["linear", "mish", "linear"]


@pytest.mark.parametrize("shape, says", [
    ("2x5", "the model's forward fails on example inputs of shape 2x5"),
    ("2xfour", "expected positive dims like 4x784"),
    ("99999999x99999999x99", "cannot make an input of that shape"),
])
def test_a_wrong_input_shape_is_one_line(capsys, shape, says):
    line = one_line(capsys, ["minimize", f"{__name__}:factory", "--input-shape", shape])
    assert says in line


def factory() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_an_output_name_the_cli_cannot_write_is_one_line_before_any_work(tmp_path, capsys):
    line = one_line(capsys, ["minimize", "no_such_module:factory", "-o", str(tmp_path / "m.pth")])
    assert "m.pth: cannot tell what to write from the suffix '.pth'; use one of .pt2, .onnx, .sr, .py" in line
    line = one_line(capsys, ["emit", "no_such_module:factory", "--pt2", str(tmp_path / "m.onnx")])
    assert "m.onnx: expected a file name ending in .pt2" in line
    assert not os.listdir(tmp_path)
