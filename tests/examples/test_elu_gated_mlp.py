"""examples/elu_gated_mlp: ELU (not in the library) declared by a rule file, so that the dead hidden
units of an ELU-gated MLP `down(elu(gate(x)) * up(x))` in a small transformer leave exactly."""
import shutil

import pytest
import torch

from sr_ir.cli.main import main
from sr_ir.errors import UnsupportedOpError
from sr_ir.minimization import minimize

from ._example import example_dir, load_model_module, param_count, rel_err

EX = example_dir("elu_gated_mlp")
M = load_model_module("elu_gated_mlp")

D, FF = 16, 24
# by hand: tok 32*16 + pos 6*16 + 2 blocks * (2 LayerNorms 2*32 + q/k/v/o 4*(16*16+16) + gate/up/down
# 3*24*16) + final LayerNorm 32 + head 16*32+32
BEFORE = 512 + 96 + 2 * (64 + 1088 + 1152) + 32 + 544
# a dead unit takes its gate row, its up row and its down column: 3 * D parameters; 3 units in layer 0
# (gate rows 1, 4 and up row 7), 2 in layer 1 (down columns 2, 9)
AFTER = BEFORE - 5 * 3 * D


def test_certificates_are_current(capsys):
    # no solver at test time: the committed proofs must be current
    assert main(["prove", str(EX), "--check"]) == 0
    assert "3/3 rules have a current certificate" in capsys.readouterr().out


def test_bundled_rules_alone_do_not_lower_elu():
    model = M.planted()
    with pytest.raises(UnsupportedOpError, match=r"aten\.elu\.default"):
        minimize(model, M.example_inputs(), verify=False)


def test_unproved_example_rules_keep_the_units(tmp_path):
    d = tmp_path / "elu_gated_mlp"
    d.mkdir()
    shutil.copy(EX / "elu.rules", d)  # the op lowers, but its rules have no certificate here
    res = minimize(M.planted(), M.example_inputs(), rules=d, verify=False)
    assert res.report.params_before == res.report.params_after == BEFORE
    assert "elu.drop_channel" in res.report.refused_rules


def test_example_rules_remove_the_dead_units():
    model = M.planted()
    ids = M.example_inputs()
    res = minimize(model, ids, rules=EX)
    r = res.report
    assert param_count(model) == r.params_before == BEFORE == 5792
    assert r.params_after == param_count(res.module) == AFTER == 5552
    assert r.refused_rules == {}
    assert {"elu.drop_channel", "elu.const", "raise.attention.heads"} <= set(r.rules_used)
    shapes = r.kept_by_param
    assert shapes["blocks.0.mlp.gate.weight"] == shapes["blocks.0.mlp.up.weight"] == [FF - 3, D]
    assert shapes["blocks.0.mlp.down.weight"] == [D, FF - 3]
    assert shapes["blocks.1.mlp.gate.weight"] == shapes["blocks.1.mlp.up.weight"] == [FF - 2, D]
    assert shapes["blocks.1.mlp.down.weight"] == [D, FF - 2]
    # the kept units are the live ones, in order, with their weights untouched
    w = res.program.weights
    keep0 = [u for u in range(FF) if u not in (1, 4, 7)]
    keep1 = [u for u in range(FF) if u not in (2, 9)]
    assert torch.equal(w["blocks.0.mlp.gate.weight"], model.blocks[0].mlp.gate.weight[keep0])
    assert torch.equal(w["blocks.1.mlp.down.weight"], model.blocks[1].mlp.down.weight[:, keep1])
    assert r.verification["float64"]["max_rel"] <= 1e-12
    x = torch.randint(0, M.VOCAB, (3, M.SEQ))
    with torch.no_grad():
        assert rel_err(res.module(x), model(x)) <= 1e-12
