"""The CLI: lower/show/emit on real files, one-line errors without tracebacks, nothing half-written."""
import json
import subprocess
import sys

import torch

from sr_ir.cli.main import main
from sr_ir.ir.persist import load
from sr_ir.models.lenet import lenet300_100
from sr_ir.comparison import compare

LENET = "sr_ir.models.lenet:lenet300_100"


def sr_ir(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sr_ir.cli.main", *args], capture_output=True, text=True, cwd=cwd)


def test_lower_show_emit_pipeline(tmp_path, capsys):
    sr = tmp_path / "lenet.sr"
    assert main(["lower", LENET, "-o", str(sr)]) == 0
    assert sr.is_file() and sr.with_suffix(".safetensors").is_file()
    prog = load(sr)
    assert prog.param_count() == 266_610
    capsys.readouterr()
    assert main(["show", str(sr), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["total_parameters"] == 266_610
    assert sum(r["parameters"] for r in shown["ops"]) == 266_610
    pt2 = tmp_path / "lenet.pt2"
    assert main(["emit", str(sr), "--pt2", str(pt2)]) == 0
    restored = torch.export.load(str(pt2)).module()
    x = torch.randn(5, 784)
    assert compare(lenet300_100().eval(), restored, (x,)).max_abs == 0.0
    # A .pt2 from torch.export.save lowers too.
    assert main(["show", str(pt2)]) == 0
    assert "# total: 266,610 parameters" in capsys.readouterr().out


def test_show_text_has_sizes_per_op(capsys):
    assert main(["show", LENET]) == 0
    out = capsys.readouterr().out
    assert "# 235,500 params" in out  # fc1: 300*784 + 300
    assert out.rstrip().endswith("5 ops")  # linear, relu, linear, relu, linear (the no-op flatten is dropped)


def test_malformed_ir_reports_location_without_traceback(tmp_path):
    bad = tmp_path / "bad.sr"
    bad.write_text("graph g(%x: f32[N, 4]) -> (f32[N, 4]) {\n  %y = relu(%x) : f32[N, 4]\n  return %y %y\n}\n")
    r = sr_ir("show", str(bad))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert f"{bad}:3:" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_inputs_are_one_line_errors(tmp_path):
    for args in (["lower", "no_such_module:f"], ["show", str(tmp_path / "missing.sr")], ["emit", LENET],
                 ["lower", "sr_ir.models.lenet:nope"], ["show", str(tmp_path / "x.pt2")]):
        r = sr_ir(*args)
        assert r.returncode != 0, args
        assert "Traceback" not in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("sr-ir "), r.stderr


def test_failed_write_leaves_nothing_behind(tmp_path):
    out = tmp_path / "never.sr"
    r = sr_ir("lower", "tests.frontend.models:UsesUnsupportedOp", "--input-shape", "2x8", "-o", str(out),
              cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert r.returncode != 0 and "aten.logcumsumexp" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_command_has_help():
    for cmd in ("demo", "lower", "show", "emit"):
        r = sr_ir(cmd, "--help")
        assert r.returncode == 0 and "usage: sr-ir" in r.stdout
