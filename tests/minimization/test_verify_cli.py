"""Built-in verification refuses a wrong result and says where; `sr-ir minimize` end to end."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from sr_ir.cli.main import main
from sr_ir.errors import VerificationError
from sr_ir.minimization import minimize
from sr_ir.testing.forging import replaced, trusting

from .nets import GeluMLP


def _model() -> GeluMLP:
    torch.manual_seed(0)
    m = GeluMLP()
    with torch.no_grad():
        m.layers[0].weight[:4] = 0
        m.layers[0].bias[:4] = 1.0
    return m


def example_inputs():
    return (torch.randn(4, 20),)


def factory():
    return _model()


DROPS_CONSTANTS = """
rule channels.linear.fold_const
  match y = linear(x: [*B, n], weight, bias)
  where x[*B, c] == k
  then  y = linear(drop(x, -1, c), drop(weight, 1, c), bias)
"""


def _forge_drop_constants(monkeypatch):
    """The bundled fold rule replaced by one that drops constants instead of folding them (what most
    peers do), with a forged certificate: only the numeric check stands between it and the user."""
    import sr_ir.lang.loader as loader
    import sr_ir.rewrite.rulebook as rulebook

    rs = replaced(loader.default_rules(), "channels.linear.fold_const", DROPS_CONSTANTS)
    monkeypatch.setattr(loader, "_DEFAULT", rs)  # what every caller of default_rules() gets
    certify = trusting({"channels.linear.fold_const"})
    monkeypatch.setattr(rulebook, "default_certifier", lambda: certify)


def test_a_wrong_fold_is_caught_with_its_location(monkeypatch):
    _forge_drop_constants(monkeypatch)
    with pytest.raises(VerificationError, match=r"differs from the original on example inputs .* output 0 at \[\d+, \d+\]"):
        minimize(_model(), example_inputs())


def test_cli_writes_every_format_and_json(tmp_path, capsys):
    w = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in _model().state_dict().items()}, str(w))
    outs = [tmp_path / "m.sr", tmp_path / "m.pt2", tmp_path / "m.onnx"]
    rc = main(["minimize", f"{__name__}:factory", "--weights", str(w), "--json", "--quiet"]
              + [a for o in outs for a in ("-o", str(o))])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params_after"] < report["params_before"]
    assert report["verification"]["float32"]["max_rel"] <= 1e-5
    assert all(o.is_file() for o in outs) and (tmp_path / "m.safetensors").is_file()
    # the written program reloads and minimizes to itself
    rc = main(["minimize", str(outs[0]), "--quiet", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and again["params_after"] == again["params_before"] == report["params_after"]


def test_cli_table_and_one_line_errors(tmp_path, capsys):
    rc = main(["minimize", f"{__name__}:factory", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "layers.0.weight" in out and "verified float64" in out
    rc = main(["minimize", str(tmp_path / "missing.pt2")])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "no such file" in err
    rc = main(["minimize", f"{__name__}:factory", "-o", str(tmp_path / "x.txt")])
    assert rc != 0 and "cannot tell what to write from the suffix '.txt'" in capsys.readouterr().err


def test_cli_writes_nothing_on_a_mismatch(tmp_path, monkeypatch, capsys):
    _forge_drop_constants(monkeypatch)
    out = tmp_path / "m.sr"
    rc = main(["minimize", f"{__name__}:factory", "-o", str(out), "--quiet"])
    assert rc != 0 and "nothing was written" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_non_finite_example_inputs_or_outputs_are_refused():
    """A NaN makes every comparison NaN: verification refuses instead of passing it."""
    import pytest
    import torch
    from torch import nn

    from sr_ir.errors import VerificationError
    from sr_ir.minimization import minimize

    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    x[1, 2] = float("nan")
    with pytest.raises(VerificationError, match="example input 0 holds NaN"):
        minimize(m, (x,))
    with torch.no_grad():
        m[2].bias[0] = float("nan")  # the model itself outputs NaN
    with pytest.raises(VerificationError, match="original model's output holds NaN"):
        minimize(m, (torch.randn(3, 4, dtype=torch.float64),))
