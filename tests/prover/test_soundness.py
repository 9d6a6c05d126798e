"""What the tiers try: the instances behind a proof (runs of dims at every rank, list attributes
per element, a value of its own for every float attribute), where a real counterexample is looked
for, and what a certificate-to-be records."""
import random
import re
from fractions import Fraction

import pytest

from sr_ir.lang.loader import default_rules, load_rules
from sr_ir.prover import tiers
from sr_ir.prover.algebra import Exact, Sym
from sr_ir.prover.obligation import (
    _all_variants,
    attr_table,
    attr_values,
    classify_where,
    concrete_instances,
    parametric_instance,
)
from sr_ir.resources import data_dir

LIB = default_rules()


def _load(rule_dir, text):
    d = rule_dir("t.rules", text)
    return load_rules([data_dir("rules") / "ops"], extra=[d])


def _instances(rule, ops):
    return concrete_instances(rule, ops, classify_where(rule), lambda: Exact("standin"), tiers.CONFIGS, 0, cover=True)


def test_a_real_counterexample_is_searched_at_every_instance(rule_dir):
    # with one key (s = 1) the real softmax gives that key weight 1, so only the value of key 0
    # matters and the rule holds there; a stand-in softmax differs at s = 1 all the same
    rs = _load(rule_dir, """
rule t.first_key_only
  match y = scaled_dot_product_attention(q: [b, l, e], k: [b, s, e], v: [b, s, ev], none, causal=cz, scale=sc)
  where cz == false, v[:, 0, c] == kv
  then  y[:, :, c] == kv
""")
    r = rs.rule("t.first_key_only")
    where = classify_where(r)
    insts = _instances(r, rs.ops)
    one = next(i for i in insts if i.dims["s"] == 1)
    alone = tiers.Result(r.name, "unknown", None)
    tiers._report_refutation(r, rs.ops, where, one, alone, "test", None, None, random.Random(0), [one])
    assert alone.status == "refuted-uf"  # at s = 1 alone there is no real counterexample
    res = tiers.Result(r.name, "unknown", None)
    tiers._report_refutation(r, rs.ops, where, one, res, "test", None, None, random.Random(0), insts)
    assert res.status == "refuted"
    assert int(res.counterexample["instance"].split("s=")[1].split(",")[0]) >= 2
    assert prove_and_status(r, rs.ops) == "refuted"


def prove_and_status(rule, ops):
    return tiers.prove_rule(rule, ops).status


def test_runs_of_dims_are_tried_with_0_1_and_2_axes_at_every_tier():
    res = tiers.prove_rule(LIB.rule("channels.linear.fold_const"), LIB.ops)
    assert (res.status, res.tier) == ("proved", "parametric")
    assert {len(i["dims"]["*B"]) for i in res.bounded} == {0, 1, 2}
    assert {len(i["dims"]["*B"]) for i in res.tested} == {0, 1, 2}
    assert sorted(res.parametric) == ["*B: 0 axes", "*B: 1 axis", "*B: 2 axes"]


def test_every_float_attribute_has_its_own_value():
    rule = LIB.rule("compensated_layer_norm.compose")
    insts = _instances(rule, LIB.ops)
    seen = set()
    for inst in insts:
        floats = [inst.attrs[k] for k in ("s1", "s2", "eps")]
        assert all(isinstance(v, Fraction) for v in floats)
        assert len(set(floats)) == 3, inst.label  # distinct within an instance
        seen.add(tuple(floats))
    assert len(seen) == len(insts)  # and varied across instances
    alg = Sym()
    par = parametric_instance(rule, LIB.ops, classify_where(rule), alg, insts[0], set())
    syms = [par.attrs[k] for k in ("s1", "s2", "eps")]
    assert len(set(syms)) == 3 and all(getattr(s, "is_Symbol", False) for s in syms)


def test_list_attributes_are_varied_per_element():
    conv = LIB.ops["conv2d"]
    values = {a.name: attr_values(conv, a) for a in conv.attr_params}
    assert [0, 1] in values["padding"] and [1, 0] in values["padding"] and [2, 1] in values["padding"]
    assert [2, 1] in values["stride"] and [1, 2] in values["stride"]
    assert [2, 1] in values["dilation"] and [1, 2] in values["dilation"]
    pool = LIB.ops["max_pool2d"]
    kernel = attr_values(pool, pool.attr("kernel_size"))
    assert [2, 1] in kernel and [1, 2] in kernel
    assert [] in attr_values(pool, pool.attr("stride")) and [2, 1] in attr_values(pool, pool.attr("stride"))


def test_every_attribute_value_appears_in_the_covering_combinations():
    rule = LIB.rule("channels.conv2d.dead_row")
    combos, n_cover = _all_variants(rule, LIB.ops)
    cover = combos[:n_cover]
    conv = LIB.ops["conv2d"]
    for a in conv.attr_params:
        for v in attr_values(conv, a):
            assert any(c[a.name] == v for c in cover), (a.name, v)
    # and the bounded tier meets asymmetric padding
    res = tiers.prove_rule(rule, LIB.ops)
    pads = {tuple(i["attrs"]["padding"]) for i in res.bounded}
    assert any(p[0] != p[1] for p in pads), pads


def test_an_attribute_only_condition_filters_the_combinations(rule_dir):
    rs = _load(rule_dir, """
rule t.pad0
  match y = conv2d(x, weight, bias, padding=p)
  where p[0] == 0, weight[j, :, :, :] == 0
  then  y[:, j, :, :] == bias[j]
""")
    combos, n_cover = _all_variants(rs.rule("t.pad0"), rs.ops)
    pads = {tuple(c["p"]) for c in combos[:n_cover]}
    assert pads == {(0, 0), (0, 1)}  # every padding the condition allows, each element varied


def test_a_second_value_for_a_value_variable_is_a_condition_not_a_replacement(rule_dir):
    rs = _load(rule_dir, """
rule t.same_twice
  match y = linear(x: [*B, n], weight, bias)
  where x[*B, c] == k, k == 1, k == 2 - 1
  then  y = linear(drop(x, -1, c), drop(weight, 1, c), bias + weight[:, c])
""")
    assert tiers.prove_rule(rs.rule("t.same_twice"), rs.ops).status == "proved"


def test_two_matched_nodes_sharing_an_attribute_name_is_an_error(rule_dir):
    rs = _load(rule_dir, """
rule t.shared_eps
  match y = batch_norm(z, w2, b2, m2, v2); z = batch_norm(x, w1, b1, m1, v1)
  where w2[j] == 0
  then  y[:, j, *S] == b2[j]
""")
    res = tiers.prove_rule(rs.rule("t.shared_eps"), rs.ops)
    assert res.status == "error" and "eps" in res.message and "rename" in res.message


@pytest.mark.parametrize("name", ["channels.conv2d.dead_row", "layer_norm.compensate"])
def test_the_result_lists_every_bounded_instance_with_its_attributes(name):
    rule = LIB.rule(name)
    res = tiers.prove_rule(rule, LIB.ops)
    assert res.status == "proved" and len(res.bounded) == len(res.sizes) >= 3
    table = attr_table(rule, LIB.ops)
    floats = [n for n, bi, a, _ in table if LIB.ops[rule.bindings[bi].op].attr(a).kind == "float"]
    for inst in res.bounded:
        assert set(inst["attrs"]) == {n for n, _, _, _ in table}
        assert all(isinstance(v, int) or isinstance(v, list) for v in inst["dims"].values())
        for f in floats:  # recorded as the exact rational the tier used
            assert Fraction(inst["attrs"][f]) > 0
    assert set(res.templates) == {op for op in rule.ops_used if LIB.ops[op].means and LIB.ops[op].torch}


def test_a_conclusion_that_cannot_be_built_where_the_match_holds_refutes(rule_dir):
    # dropping one output row of a grouped conv leaves o - 1 rows, not a multiple of the groups; a
    # concat along the batch axis has no channel width(us, 1) + c on axis 1. Both matches exist.
    rs = _load(rule_dir, """
rule t.drop_row_any_groups
  match y = conv2d(x, weight, bias, stride=s, padding=p, dilation=d, groups=g)
  then  drop(y, 1, j) = conv2d(x, drop(weight, 0, j), drop(bias, 0, j), s, p, d, g)
rule t.concat_any_dim
  match y = concat(us...: [b, p], x: [b, n], vs...: [b, q], dim=d)
  then  drop(y, 1, width(us, 1) + c) = concat(us..., drop(x, 1, c), vs..., d)
""")
    res = tiers.prove_rule(rs.rule("t.drop_row_any_groups"), rs.ops)
    assert res.status == "refuted" and "cannot be built" in res.message and "groups" in res.message
    assert int(re.search(r"\bg=(-?\d+)", res.counterexample["instance"]).group(1)) > 1
    res = tiers.prove_rule(rs.rule("t.concat_any_dim"), rs.ops)
    assert res.status == "refuted" and "cannot be built" in res.message
    assert int(re.search(r"\bd=(-?\d+)", res.counterexample["instance"]).group(1)) not in (1, -1)
    # with their side conditions (the library's rules) both prove
    for name in ("channels.conv2d.drop_row", "channels.concat.drop_channel"):
        assert tiers.prove_rule(LIB.rule(name), LIB.ops).status == "proved"
