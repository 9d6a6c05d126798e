"""Axioms are declarations the prover reads by their form: what `sr-ir prove --axioms` validates is
exactly what the proofs use, and a certificate covers the statements and definitions it relied on."""
import json
import shutil
from pathlib import Path

import pytest

from sr_ir.cli.main import main
from sr_ir.lang.loader import load_rules
from sr_ir.prover import certificates
from sr_ir.prover.axioms import validate
from sr_ir.prover.tiers import prove_rule
from sr_ir.resources import data_dir

GELU_RULES = """
rule t.gelu_zero
  match y = gelu(x: [*B, n])
  axioms gelu_zero
  where x[*B, c] == 0
  then  y[*B, c] == 0

rule t.gelu_one
  match y = gelu(x: [*B, n])
  axioms gelu_zero
  where x[*B, c] == 0
  then  y[*B, c] == 1
"""
ZERO_PIN = "axiom gelu_zero: gelu(0) == 0"


def _ops_library(tmp_path: Path, replace: tuple[str, str] | None = None) -> Path:
    """A copy of the bundled op and function declarations, optionally with one declaration edited."""
    lib = tmp_path / "ops"
    shutil.copytree(data_dir("rules") / "ops", lib)
    if replace:
        f = lib / "functions.rules"
        text = f.read_text()
        assert replace[0] in text
        f.write_text(text.replace(*replace))
    return lib


def _rows(vocabulary):
    return {r.name: r for r in validate(vocabulary)}


def test_a_wrong_zero_pin_is_caught_and_is_what_the_prover_then_uses(tmp_path, rule_dir):
    user = rule_dir("t.rules", GELU_RULES)
    good = load_rules([_ops_library(tmp_path / "good")], extra=[user])
    assert all(r.ok for r in validate(good.vocabulary))
    res = prove_rule(good.rule("t.gelu_zero"), good.ops)
    assert (res.status, res.tier) == ("proved", "parametric"), res.message
    assert prove_rule(good.rule("t.gelu_one"), good.ops).status == "refuted"  # real: gelu(0) is 0
    certificates.write(good.rule("t.gelu_zero"), good.ops, res.to_json())
    assert certificates.status(good.rule("t.gelu_zero"), good) == "current"

    bad = load_rules([_ops_library(tmp_path / "bad", (ZERO_PIN, "axiom gelu_zero: gelu(0) == 1"))], extra=[user])
    rows = _rows(bad.vocabulary)
    # --axioms: the declaration disagrees with gelu's exact definition
    assert not rows["gelu_zero"].ok and "DISAGREES with the definition of gelu" in rows["gelu_zero"].detail
    assert rows["gelu_zero"].statement == "gelu(0) == 1" and rows["gelu_zero"].loc.endswith(
        f"functions.rules:{bad.axioms['gelu_zero'].loc.line}:1")
    assert all(r.ok for name, r in rows.items() if name != "gelu_zero")
    # the prover uses exactly the declared statement: now gelu(0) == 1 proves and gelu(0) == 0 does not
    assert prove_rule(bad.rule("t.gelu_one"), bad.ops).status == "proved"
    wrong = prove_rule(bad.rule("t.gelu_zero"), bad.ops)
    assert wrong.status == "refuted-uf", (wrong.status, wrong.message)
    # and the certificate that relied on the old statement is stale
    assert certificates.status(bad.rule("t.gelu_zero"), bad) == "stale"


def test_prove_axioms_reports_a_wrong_declaration(rule_dir, capsys):
    d = rule_dir("wrong_axiom.rules", "axiom gelu_one: gelu(0) == 1\n")
    code = main(["prove", "--axioms", "--rules", str(d)])
    out = capsys.readouterr().out
    assert code == 1
    line = next(ln for ln in out.splitlines() if "gelu_one" in ln)
    assert "wrong_axiom.rules:1:1: BAD" in line and "DISAGREES with the definition of gelu" in line
    # gelu(0) == 0 and gelu(0) == 1 together: the library would prove anything
    assert "BAD  <consistency>" in out
    code = main(["prove", "--axioms", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0 and all(r["ok"] for r in rows) and "gelu_one" not in {r["name"] for r in rows}


def test_a_user_function_and_its_axioms_are_validated_and_used(rule_dir, capsys):
    d = rule_dir("elu.rules", """
function elu(x, alpha)
  means max(x, 0) + alpha * (exp(min(x, 0)) - 1)
  torch "torch.where({x} > 0, {x}, {alpha} * (torch.exp({x}) - 1))"

axiom elu_zero: elu(0, alpha) == 0

op elu(x: T[*B], alpha: float = 1.0) -> T[*B]
  torch "F.elu({x}, {alpha})"
  means out[*I] = elu(x[*I], alpha)

rule elu.zero
  match y = elu(x: [*B, n])
  axioms elu_zero
  where x[*B, c] == 0
  then  y[*B, c] == 0

rule elu.zero_without_axiom
  match y = elu(x: [*B, n])
  where x[*B, c] == 0
  then  y[*B, c] == 0
""")
    assert main(["prove", "--axioms", "--rules", str(d)]) == 0
    out = capsys.readouterr().out
    assert any(ln.startswith("ok   elu_zero") for ln in out.splitlines())
    assert any(ln.startswith("ok   function elu ") for ln in out.splitlines())
    rs = load_rules(extra=[d])
    res = prove_rule(rs.rule("elu.zero"), rs.ops)
    assert (res.status, res.tier) == ("proved", "parametric"), res.message
    res = prove_rule(rs.rule("elu.zero_without_axiom"), rs.ops)
    assert res.status == "refuted-uf" and res.counterexample["axiom_hint"] == "elu_zero"


EXP_RULES = """
op exp(x: T[*B]) -> T[*B]
  torch "torch.exp({x})"
  means out[*I] = exp(x[*I])

op exp_sum(x: T[*B], y: T[*B]) -> T[*B]
  torch "torch.exp({x} + {y})"
  means out[*I] = exp(x[*I] + y[*I])

op exp_clamped(x: T[*B]) -> T[*B]
  torch "torch.clamp(torch.exp({x}), min=0)"
  means out[*I] = max(exp(x[*I]), 0)

rule t.exp_split
  match z = exp_sum(x: [*B, n], y: [*B, n])
  AXIOMS
  then  z = mul(exp(x), exp(y))

rule t.exp_clamp
  match z = exp_clamped(x: [*B, n])
  AXIOMS
  then  z = exp(x)
"""


@pytest.mark.parametrize("named", [True, False])
def test_the_exp_homomorphism_and_positivity_are_used_only_when_named(rule_dir, named):
    text = EXP_RULES.replace("  AXIOMS\n", "  axioms exp_add\n" if named else "", 1)
    text = text.replace("  AXIOMS\n", "  axioms exp_pos\n" if named else "", 1)
    rs = load_rules([data_dir("rules") / "ops"], extra=[rule_dir("exp.rules", text)])
    for name in ("t.exp_split", "t.exp_clamp"):
        res = prove_rule(rs.rule(name), rs.ops)
        if named:
            assert (res.status, res.tier) == ("proved", "parametric"), (name, res.message)
        else:
            assert res.status == "refuted-uf", (name, res.status, res.message)
            assert {"exp_add", "exp_pos"} <= set(res.counterexample["axiom_hint"].split(", "))


def test_a_certificate_covers_the_definitions_of_the_functions_the_rule_uses(tmp_path):
    from dataclasses import replace

    lib = load_rules()
    edited = load_rules([_ops_library(tmp_path, ('torch "F.gelu({x})"', 'torch "F.silu({x})"'))])
    gelu = lib.rule("channels.gelu.drop_channel")  # gelu's means: exact or tanh form, by `approximate`
    assert gelu.functions == ("erf", "exp", "gelu", "gelu_tanh", "sqrt", "tanh")
    # the same rule against the edited vocabulary: another hash, so its certificate is stale
    assert certificates.rule_hash(replace(gelu, vocabulary=edited.vocabulary), lib.ops) != \
        certificates.rule_hash(gelu, lib.ops)
    relu = lib.rule("channels.relu.drop_channel")  # uses no function whose declaration changed: same hash
    assert certificates.rule_hash(replace(relu, vocabulary=edited.vocabulary), lib.ops) == \
        certificates.rule_hash(relu, lib.ops)


def test_a_softmax_statement_other_than_the_definition_is_rejected_by_the_validator():
    from sr_ir.lang.functions import AxiomDecl, BuiltinForm
    from sr_ir.lang.loader import parse_rule_text
    from sr_ir.prover.axioms import _check_builtin

    lib = load_rules()
    item = parse_rule_text("builtin axiom softmax_rows: sum(j < s, softmax(t < s, score[t], keep[t], j)) == 1",
                           "<test>")[0]
    decl = AxiomDecl("softmax_rows", item.statement, BuiltinForm("softmax_rows"), ("softmax",), True)
    ok, detail = _check_builtin(decl, lib.functions)
    assert not ok and "mask [0]" in detail  # a row with every key masked sums to 0, not 1
    ok, _ = _check_builtin(lib.axioms["softmax_rows"], lib.functions)
    assert ok


@pytest.mark.parametrize("statement, consistent", [
    ("exp(1) == -1", False),  # against exp_pos at the declared point
    ("sigmoid(0) == 1/3", False),  # against sigmoid_half
    ("exp(a) >= 0", True),
])
def test_the_consistency_check_covers_the_whole_declared_library(rule_dir, statement, consistent):
    rs = load_rules(extra=[rule_dir("extra.rules", f"axiom extra: {statement}\n")])
    rows = _rows(rs.vocabulary)
    assert rows["<consistency>"].ok == consistent, rows["<consistency>"].detail
