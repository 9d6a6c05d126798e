"""sr_ir.rewrite.matching: where a rule's `match` clause binds in a program, and what it binds (IR
operands, dims of shape annotations, attributes), with its static side conditions checked."""
from __future__ import annotations

from pathlib import Path

import pytest
import sympy

import sr_ir
from sr_ir.ir.program import ParamRef, ValueRef
from sr_ir.lang.functions import function_table
from sr_ir.lang.loader import load_rules
from sr_ir.lang.rule import is_static
from sr_ir.rewrite.matching import Graph, matches

N = sympy.Symbol("N", integer=True, positive=True)

EXTRA = """
rule t.rank2
  match y = relu(x: [b, n])
  then  drop(y, -1, c) = relu(drop(x, -1, c))

rule t.same_batch
  match y = add(x: [*B, n], z: [*B, n])
  then  drop(y, -1, c) = add(drop(x, -1, c), drop(z, -1, c))
"""

PROGRAM = """graph m(%x: f32[N, 5, 8], %x2: f32[N, 5, 8], %a: f32[N, 4], %v: f32[1, 4], %u: f32[N, 1], %w1: f32[4]) -> (f32[N, 5, 8], f32[N, 5, 8], f32[N, 4], f32[N, 4], f32[N, 4], f32[N, 12], f32[N, 12], f32[4], f32[N, 4], f32[N, 5, 8], f32[N, 4], f32[N, 3], f32[N, 3]) {
  param @w: f32[8]
  param @fc.weight: f32[3, 4]
  param @fc.bias: f32[3]
  %pow_1 = pow(%x, exponent=2.0) : f32[N, 5, 8]
  %mean = mean(%pow_1, dims=[-1], keepdim=true) : f32[N, 5, 1]
  %add = add(%mean, 1e-06) : f32[N, 5, 1]
  %rsqrt = rsqrt(%add) : f32[N, 5, 1]
  %mul = mul(%x, %rsqrt) : f32[N, 5, 8]
  %mul_1 = mul(@w, %mul) : f32[N, 5, 8]
  %pow_2 = pow(%x2, exponent=2.0) : f32[N, 5, 8]
  %mean_2 = mean(%pow_2, dims=[-1], keepdim=true) : f32[N, 5, 1]
  %add_2 = add(%mean_2, 1e-06) : f32[N, 5, 1]
  %rsqrt_2 = rsqrt(%add_2) : f32[N, 5, 1]
  %mul_2 = mul(%x, %rsqrt_2) : f32[N, 5, 8]
  %mul_3 = mul(@w, %mul_2) : f32[N, 5, 8]
  %s1 = add(%a, %a) : f32[N, 4]
  %s2 = add(%a, %v) : f32[N, 4]
  %s3 = add(%a, %u) : f32[N, 4]
  %cat = concat(%a, %s1, %s2, dim=-1) : f32[N, 12]
  %cat1 = concat(%a, %s1, %s2, dim=1) : f32[N, 12]
  %r1 = relu(%w1) : f32[4]
  %r2 = relu(%a) : f32[N, 4]
  %r3 = relu(%x) : f32[N, 5, 8]
  %g = gelu(%a, approximate="tanh") : f32[N, 4]
  %fb = linear(%a, @fc.weight, @fc.bias) : f32[N, 3]
  %fn = linear(%a, @fc.weight) : f32[N, 3]
  return %mul_1, %mul_3, %s1, %s2, %s3, %cat, %cat1, %r1, %r2, %r3, %g, %fb, %fn
}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    (d / "t.rules").write_text(EXTRA)
    rs = load_rules(extra=[Path(d)])
    p = sr_ir.parse(PROGRAM)
    return rs, p, Graph.of(p, rs.ops), function_table(rs)


def found(setup, rule: str, node: str):
    rs, p, g, fn = setup
    return list(matches(rs.rule(rule), p.node_map()[node], g, fn))


# ---- single-node patterns -------------------------------------------------------------------------

def test_single_op_binds_operands_and_dims(setup):
    (m,) = found(setup, "channels.linear.unused_col", "fb")
    assert m.root.name == "fb" and [n.name for n in m.nodes] == ["fb"]
    assert m.refs == {"y": ValueRef("fb"), "x": ValueRef("a"), "weight": ParamRef("fc.weight"),
                      "bias": ParamRef("fc.bias")}
    assert m.slots == {"y": (0, None), "x": (0, 0), "weight": (0, 1), "bias": (0, 2)}
    assert m.env["*B"] == (N,) and m.env["n"] == 4  # from x: [*B, n]
    assert m.env["x"].kind == "value" and m.env["x"].type.shape == (N, 4)
    assert m.env["weight"].kind == "param" and m.env["weight"].type.shape == (3, 4)


def test_a_rule_matches_only_its_own_op(setup):
    assert found(setup, "channels.linear.unused_col", "r2") == []
    assert found(setup, "relu.const", "g") == []


def test_an_optional_operand_must_be_as_the_rule_states_it(setup):
    # `bias` named: the operand must be there; `none`: it must be absent
    assert len(found(setup, "channels.linear.drop_row", "fb")) == 1
    assert found(setup, "channels.linear.drop_row", "fn") == []
    assert found(setup, "channels.linear.drop_row_nobias", "fb") == []
    (m,) = found(setup, "channels.linear.drop_row_nobias", "fn")
    assert "bias" not in m.refs


def test_attributes_bind_under_the_rules_name_or_their_own(setup):
    (m,) = found(setup, "gelu.const", "g")  # approximate=a
    assert m.env["a"] == "tanh"
    (m,) = found(setup, "channels.gelu.drop_channel", "g")  # not mentioned: under its own name
    assert m.env["approximate"] == "tanh"


# ---- shape patterns -------------------------------------------------------------------------------

def test_star_b_takes_any_run_of_leading_dims(setup):
    (m,) = found(setup, "relu.const", "r1")  # x: [*B, n] on f32[4]
    assert m.env["*B"] == () and m.env["n"] == 4
    (m,) = found(setup, "relu.const", "r3")  # on f32[N, 5, 8]
    assert m.env["*B"] == (N, 5) and m.env["n"] == 8


def test_a_fixed_rank_pattern_does_not_match_the_wrong_rank(setup):
    (m,) = found(setup, "t.rank2", "r2")  # x: [b, n] on f32[N, 4]
    assert m.env["b"] == N and m.env["n"] == 4
    assert found(setup, "t.rank2", "r1") == []  # rank 1
    assert found(setup, "t.rank2", "r3") == []  # rank 3
    # [b, n, *S] needs rank 2 at least; on maps the channel is axis 1
    assert found(setup, "relu.const_maps", "r1") == []
    (m,) = found(setup, "relu.const_maps", "r3")
    assert m.env["b"] == N and m.env["n"] == 5 and m.env["*S"] == (8,)


def test_one_star_b_names_the_same_dims_everywhere(setup):
    (m,) = found(setup, "t.same_batch", "s1")
    assert m.env["*B"] == (N,) and m.env["n"] == 4
    assert m.refs["x"] == m.refs["z"] == ValueRef("a")
    assert found(setup, "t.same_batch", "s2") == []  # *B = (N,) and (1,)
    assert found(setup, "t.same_batch", "s3") == []  # n = 4 and 1


# ---- chains -------------------------------------------------------------------------------------

def test_a_chain_follows_the_producers_of_the_root(setup):
    (m,) = found(setup, "raise.rms_norm", "mul_1")
    assert [n.name for n in m.nodes] == ["mul_1", "mul", "rsqrt", "add", "mean", "pow_1"]
    assert m.refs["x"] == ValueRef("x") and m.refs["w"] == ParamRef("w")
    assert m.refs["eps"] == 1e-06 and m.env["eps"].kind == "scalar" and m.env["eps"].scalar == 1e-06
    assert m.env["dd"] == [-1] and m.env["kd"] is True and m.env["ex"] == 2.0
    assert m.env["*B"] == (N, 5) and m.env["n"] == 8
    assert m.slots["x"] == (5, 0) and m.slots["eps"] == (3, 1)


def test_a_chain_does_not_match_from_another_node_or_in_another_order(setup):
    assert found(setup, "raise.rms_norm", "mul") == []  # mul(%x, %rsqrt) is not mul(w, z)
    assert found(setup, "raise.rms_norm_weight_last", "mul_1") == []  # mul(@w, ..): weight first


def test_one_name_in_a_chain_is_one_operand(setup):
    # mul_3's chain squares %x2 but multiplies %x: `x` cannot stand for both
    assert found(setup, "raise.rms_norm", "mul_3") == []


def test_static_side_conditions_decide_the_match(setup):
    rs, p, g, fn = setup
    # the same chain with mean over another axis
    bad = sr_ir.parse(PROGRAM.replace("%mean = mean(%pow_1, dims=[-1], keepdim=true) : f32[N, 5, 1]",
                                      "%mean = mean(%pow_1, dims=[1], keepdim=true) : f32[N, 1, 8]")
                      .replace("%add = add(%mean, 1e-06) : f32[N, 5, 1]", "%add = add(%mean, 1e-06) : f32[N, 1, 8]")
                      .replace("%rsqrt = rsqrt(%add) : f32[N, 5, 1]", "%rsqrt = rsqrt(%add) : f32[N, 1, 8]"))
    assert list(matches(rs.rule("raise.rms_norm"), bad.node_map()["mul_1"], Graph.of(bad, rs.ops), fn)) == []
    # the rule proved for `d == -1` binds the dim=-1 concat, not the same concat written with dim=1
    assert len(found(setup, "channels.concat.drop_channel_last", "cat")) == 3
    assert found(setup, "channels.concat.drop_channel_last", "cat1") == []


def test_conditions_on_tensor_entries_are_not_static(setup):
    rs = setup[0]
    r = rs.rule("concat.const")
    assert [is_static(r, w) for w in r.where] == [True, False]  # d == 1 or d == -1, x[:, c] == k
    r = rs.rule("channels.linear.unused_col")
    assert [is_static(r, w) for w in r.where] == [False]  # weight[:, c] == 0
    r = rs.rule("raise.rms_norm")
    assert all(is_static(r, w) for w in r.where)


# ---- variadic operands ----------------------------------------------------------------------------

def test_runs_of_a_variadic_operand_give_one_match_per_split(setup):
    ms = found(setup, "channels.concat.drop_channel_last", "cat")
    assert [m.refs["x"] for m in ms] == [ValueRef("a"), ValueRef("s1"), ValueRef("s2")]
    assert [len(m.refs["us"]) for m in ms] == [0, 1, 2]
    assert [len(m.refs["vs"]) for m in ms] == [2, 1, 0]
    second = ms[1]
    assert second.refs["us"] == [ValueRef("a")] and second.refs["vs"] == [ValueRef("s2")]
    assert second.env["us"].kind == "run" and [o.ref for o in second.env["us"].items] == [ValueRef("a")]
    assert second.slots["x"] == (0, 1) and second.slots["vs"] == (0, 2)
    assert second.env["d"] == -1
    ms = found(setup, "channels.concat.drop_channel", "cat1")
    assert [m.refs["x"] for m in ms] == [ValueRef("a"), ValueRef("s1"), ValueRef("s2")]


# ---- Graph ----------------------------------------------------------------------------------------

def test_graph_indexes_and_operands(setup):
    rs, p, g, fn = setup
    assert g.producer["mean"].op == "mean"
    assert {n.name for n in g.users["a"]} == {"s1", "s2", "s3", "cat", "cat1", "r2", "g", "fb", "fn"}
    assert g.types["mean"].shape == (N, 5, 1)
    assert g.operand(ValueRef("a")).kind == "value"
    w = g.operand(ParamRef("fc.weight"))
    assert w.kind == "param" and w.type.shape == (3, 4) and w.ref == ParamRef("fc.weight")
    assert g.operand(None).kind == "absent"
    assert g.operand(2.0).kind == "scalar" and g.operand(2.0).scalar == 2.0
    run = g.operand([ValueRef("a"), ValueRef("s1")])
    assert run.kind == "run" and [o.kind for o in run.items] == ["value", "value"]
