"""Tiers, verdicts and side-condition diagnostics on small rules."""
import pytest

from sr_ir.lang.loader import load_rules
from sr_ir.prover.run import prove_one
from sr_ir.prover.tiers import prove_rule
from sr_ir.resources import data_dir

LIB = load_rules()


@pytest.mark.parametrize("name", [
    "layer_norm.compensate", "compensated_layer_norm.compose", "rms_norm.compensate",
    "attention.const_value_dim", "channels.attention.const_key_dim", "conv2d.depthwise_const", "relu.const",
    "mul.zero_scale", "embedding.const_column", "layer_norm_channels.compensate",
])
def test_library_rules_reach_the_parametric_tier(name):
    res = prove_rule(LIB.rule(name), LIB.ops)
    assert (res.status, res.tier) == ("proved", "parametric"), res.message
    assert res.symbolic_dims  # some dims really were symbolic


def _load(rule_dir, text):
    d = rule_dir("t.rules", text)
    return load_rules([data_dir("rules") / "ops"], extra=[d])


def test_missing_axiom_is_refuted_only_for_an_arbitrary_function(rule_dir):
    rs = _load(rule_dir, """
rule t.relu_zero_without_axiom
  match y = relu(x: [*B, n])
  where x[*B, c] == 0
  then  y[*B, c] == 0
""")
    res = prove_rule(rs.rule("t.relu_zero_without_axiom"), rs.ops)
    assert res.status == "refuted-uf"
    assert "relu_zero" in res.counterexample["axiom_hint"]


def test_contradictory_conditions_are_vacuous(rule_dir):
    rs = _load(rule_dir, """
rule t.contradiction
  match y = linear(x, weight, bias)
  where weight[c, :] == 0, weight[c, :] == 1
  then  y[*B, c] == bias[c]
rule t.no_instance
  match y = conv2d(x, weight, bias, groups=g)
  where g == 1, g == 2
  then  unused x[:, j, :, :]
""")
    for name in ("t.contradiction", "t.no_instance"):
        res = prove_rule(rs.rule(name), rs.ops)
        assert res.status == "vacuous", (name, res.status, res.message)


def test_unnecessary_condition_is_a_warning(rule_dir):
    rs = _load(rule_dir, """
rule t.redundant
  match y = linear(x: [*B, n], weight, bias)
  where weight[c, :] == 0, bias[c] == b0
  then  y[*B, c] == bias[c]
""")
    out = prove_one(rs.rule("t.redundant"), rs.ops)
    assert out["status"] == "proved"
    assert any("bias[c] == b0" in w and "unnecessary" in w for w in out["warnings"])
    assert not any("weight[c, :] == 0" in w for w in out["warnings"])


def test_a_wrong_constant_is_refuted_at_a_small_counterexample(rule_dir):
    rs = _load(rule_dir, """
rule t.off_by_one
  match y = linear(x, weight, bias)
  where weight[c, :] == 0
  then  y[*B, c] == bias[c] + 1
""")
    res = prove_rule(rs.rule("t.off_by_one"), rs.ops)
    assert res.status == "refuted"
    inputs = res.counterexample["inputs"]
    # the smallest counterexample: everything zero (the difference is the constant itself)
    assert all(v == 0 for row in inputs["weight"] for v in row)
    assert res.counterexample["replay"]["max_abs_diff"] == pytest.approx(1.0)


def test_channel_variable_on_two_different_axes_is_rejected(rule_dir):
    rs = _load(rule_dir, """
rule t.two_axes
  match y = linear(x: [*B, n], weight: [m, n], bias)
  where weight[c, :] == 0, x[*B, c] == k
  then  y[*B, c] == bias[c]
""")
    res = prove_rule(rs.rule("t.two_axes"), rs.ops)
    assert res.status == "error" and "one channel axis" in res.message


def test_axiom_library_validates():
    from sr_ir.prover.axioms import validate

    rows = validate(LIB.vocabulary)
    assert all(r.ok for r in rows), [r for r in rows if not r.ok]
    # one row per declared axiom, one per function with both a definition and a torch spelling
    assert {r.name for r in rows} >= set(LIB.axioms) | {"function gelu", "function relu", "<consistency>"}
    assert rows[-1].name == "<consistency>"


def test_layout_and_reduction_semantics(rule_dir):
    rs = _load(rule_dir, """
rule t.permute_drop
  match y = permute(x: [b, n, h], dims=d)
  where d == [0, 2, 1]
  then  drop(y, 2, c) = permute(drop(x, 1, c), d)
rule t.gather_drop
  match y = gather(x: [b, n], index: [k], dim=dd)
  where dd == 1
  then  drop(y, 1, c) = gather(x, drop(index, 0, c), dd)
rule t.mean_const
  match y = mean(x: [b, n, h, w], dims=d, keepdim=kd)
  where d == [2, 3], kd == false, x[:, c, :, :] == k
  then  y[:, c] == k
rule t.mean_wrong
  match y = mean(x: [b, n, h, w], dims=d, keepdim=kd)
  where d == [2, 3], kd == false, x[:, c, 0, 0] == k
  then  y[:, c] == k
""")
    for name in ("t.permute_drop", "t.gather_drop", "t.mean_const"):
        res = prove_rule(rs.rule(name), rs.ops)
        assert (res.status, res.tier) == ("proved", "parametric"), (name, res.message)
    res = prove_rule(rs.rule("t.mean_wrong"), rs.ops)
    assert res.status == "refuted" and res.counterexample["replay"]["max_abs_diff"] > 0
