"""examples/scale_norm: ScaleNorm (`g * x / max(||x||_2, eps)`, one scalar gain; not in the library)
raised from its ATen chain and made compensable across the residual stream by rule files alone, so that
stream channels that are exactly zero, or constant and unread, leave through every norm exactly."""
import shutil

import pytest
import torch

from sr_ir.backend import emit
from sr_ir.cli.main import main
from sr_ir.errors import UnsupportedOpError
from sr_ir.lang.loader import load_rules
from sr_ir.minimization import minimize

from ._example import example_dir, load_model_module, param_count, rel_err

EX = example_dir("scale_norm")
M = load_model_module("scale_norm")

D, FF, V, L = 16, 32, 32, 6
# by hand: tok V*D + pos L*D + 2 blocks * (2 gains 1+1 + q/k/v/o 4*(D*D+D) + fc1 FF*D+FF + fc2 D*FF+D)
# + final gain 1 + head D*V+V
BEFORE = V * D + L * D + 2 * (2 + 4 * (D * D + D) + FF * D + FF + D * FF + D) + 1 + D * V + V
# one stream channel takes: its tok and pos columns (V + L), per block the q/k/v columns (3*D), the
# o row and bias (D + 1), the fc1 column (FF), the fc2 row and bias (FF + 1); the head column (V)
PER_CHANNEL = V + L + 2 * (3 * D + D + 1 + FF + FF + 1) + V
REMOVED = [3, 6, 10]  # zero channels 3 and 10, the constant (0.75) channel 6
AFTER = BEFORE - len(REMOVED) * PER_CHANNEL


def test_certificates_are_current(capsys):
    assert main(["prove", str(EX), "--check"]) == 0
    assert "5/5 rules have a current certificate" in capsys.readouterr().out


def test_bundled_rules_alone_do_not_lower_scale_norm():
    assert "scale_norm" not in load_rules().ops
    with pytest.raises(UnsupportedOpError, match=r"aten\.linalg_vector_norm\.default"):
        minimize(M.planted(), M.example_inputs(), verify=False)


def test_raise_without_the_minimize_rules_keeps_the_stream(tmp_path):
    """With the ops and the raise only, every ScaleNorm is raised, but no rule lets a channel through it."""
    d = tmp_path / "scale_norm"
    d.mkdir()
    shutil.copy(EX / "scale_norm.rules", d)
    shutil.copytree(EX / "proofs", d / "proofs")
    res = minimize(M.planted(), M.example_inputs(), rules=d, verify=False)
    assert "raise.scale_norm" in res.report.rules_used
    assert res.report.ops_after.get("scale_norm") == 5
    assert res.report.params_before == res.report.params_after == BEFORE


def test_example_rules_remove_the_stream_channels():
    model = M.planted()
    res = minimize(model, M.example_inputs(), rules=EX)
    r = res.report
    assert param_count(model) == r.params_before == BEFORE == 5477
    assert PER_CHANNEL == 330
    assert r.params_after == param_count(res.module) == AFTER == 4487
    assert r.refused_rules == {}
    assert {"raise.scale_norm", "scale_norm.compensate", "compensated_scale_norm.compose",
            "scale_norm.zero_input"} <= set(r.rules_used)
    shapes = r.kept_by_param
    k = D - len(REMOVED)
    assert shapes["tok.weight"] == [V, k] and shapes["pos"] == [L, k] and shapes["head.weight"] == [V, k]
    for b in (0, 1):
        for p in ("q", "k", "v"):
            assert shapes[f"blocks.{b}.attn.{p}.weight"] == [D, k]
        assert shapes[f"blocks.{b}.attn.o.weight"] == [k, D] and shapes[f"blocks.{b}.attn.o.bias"] == [k]
        assert shapes[f"blocks.{b}.fc1.weight"] == [FF, k] and shapes[f"blocks.{b}.fc2.weight"] == [k, FF]
    kept = [c for c in range(D) if c not in REMOVED]
    assert torch.equal(res.program.weights["tok.weight"], model.tok.weight[:, kept])
    # every norm (2 per block and the final one) is compensated for the constant channel: s2 = 0.75^2
    norms = [n for n in res.program.nodes if n.op == "compensated_scale_norm"]
    assert len(norms) == 5 and not any(n.op == "scale_norm" for n in res.program.nodes)
    assert all(n.attrs["s2"] == M.CONST_VALUE ** 2 for n in norms)
    assert r.verification["float64"]["max_rel"] <= 1e-12
    x = torch.randint(0, V, (3, L))
    with torch.no_grad():
        assert rel_err(res.module(x), model(x)) <= 1e-12
        # the compensation is what makes it exact: the same program with s2 = 0 (naive slicing) is not
        naive = res.program.copy()
        for n in naive.nodes:
            if n.op == "compensated_scale_norm":
                n.attrs["s2"] = 0.0
        assert rel_err(emit(naive, load_rules(extra=[EX]))(x), model(x)) > 1e-3
