"""sr_ir.minimization.planning: which channels a pass removes. Sites (channel rewrites that match a
node), the groups their ties make, and the greatest fixpoint that keeps a channel unless every node
holding it can remove it."""
from __future__ import annotations

import pytest
import torch

import sr_ir
from sr_ir.lang.functions import function_table
from sr_ir.lang.loader import default_rules
from sr_ir.minimization.facts import propagate
from sr_ir.minimization.planning import Plan, build_sites, groups_of, plan, slot_keys
from sr_ir.rewrite.matching import Graph
from sr_ir.rewrite.rulebook import RuleBook

F64 = torch.float64

MLP = """graph m(%x: f64[N, 4]) -> (f64[N, 2]) {
  param @a.weight: f64[3, 4]
  param @a.bias: f64[3]
  param @b.weight: f64[2, 3]
  param @b.bias: f64[2]
  %h = linear(%x, @a.weight, @a.bias) : f64[N, 3]
  %r = relu(%h) : f64[N, 3]
  %y = linear(%r, @b.weight, @b.bias) : f64[N, 2]
  return %y
}
"""

# %r is read by two layers
SHARED = """graph m(%x: f64[N, 4]) -> (f64[N, 2], f64[N, 2]) {
  param @a.weight: f64[3, 4]
  param @a.bias: f64[3]
  param @b.weight: f64[2, 3]
  param @b.bias: f64[2]
  param @c.weight: f64[2, 3]
  param @c.bias: f64[2]
  %h = linear(%x, @a.weight, @a.bias) : f64[N, 3]
  %r = relu(%h) : f64[N, 3]
  %y = linear(%r, @b.weight, @b.bias) : f64[N, 2]
  %z = linear(%r, @c.weight, @c.bias) : f64[N, 2]
  return %y, %z
}
"""

# two writers of one stream, tied by the add
RESIDUAL = """graph m(%x: f64[N, 4]) -> (f64[N, 2]) {
  param @a.weight: f64[3, 4]
  param @a.bias: f64[3]
  param @c.weight: f64[3, 4]
  param @c.bias: f64[3]
  param @b.weight: f64[2, 3]
  param @b.bias: f64[2]
  %h1 = linear(%x, @a.weight, @a.bias) : f64[N, 3]
  %h2 = linear(%x, @c.weight, @c.bias) : f64[N, 3]
  %s = add(%h1, %h2) : f64[N, 3]
  %y = linear(%s, @b.weight, @b.bias) : f64[N, 2]
  return %y
}
"""


@pytest.fixture(scope="module")
def rules():
    rs = default_rules()
    return rs, function_table(rs)


def program(text: str, zero=()):
    """The program with dense weights (no accidental zeros), then `zero`: (param, index) set to 0."""
    p = sr_ir.parse(text)
    g = torch.Generator().manual_seed(0)
    p.weights = {name: (torch.rand(tuple(t.shape), generator=g, dtype=F64) + 0.5) for name, t in p.params.items()}
    for name, idx in zero:
        p.weights[name][idx] = 0.0
    return p


def planned(rules, p, book=None, keep_one=True, structural=False) -> tuple[Plan, RuleBook]:
    rs, fn = rules
    book = book or RuleBook(rs)
    g = Graph.of(p, rs.ops)
    propagate(g, book, fn)
    return plan(g, build_sites(g, book, fn, structural=structural), keep_one=keep_one), book


def removed(pl: Plan, key, axis: int) -> list[bool]:
    return pl.removed[pl.group_of[(key, axis)]].tolist()


def alive(pl: Plan, node: str, rule: str) -> list[bool]:
    (s,) = [s for s in pl.sites if s.node.name == node and s.cr.rule.name == rule]
    return s.alive.tolist()


def test_slot_keys_name_values_and_parameters_per_reader():
    p = sr_ir.parse(MLP)
    h = p.node_map()["h"]
    assert [k for k, _ in slot_keys(h)] == [("v", "x"), ("p", "a.weight", "h", 1), ("p", "a.bias", "h", 2), ("v", "h")]


def test_dense_network_plans_nothing(rules):
    pl, _ = planned(rules, program(MLP))
    assert not pl.any()
    assert all(not r.any() for r in pl.removed)


def test_zero_row_removes_the_channel_from_its_producer_and_its_reader(rules):
    p = program(MLP, zero=[("a.weight", 1)])
    pl, _ = planned(rules, p)
    assert pl.any()
    # h, relu(h), the columns of b.weight and the rows of a.weight / a.bias are one index space
    gid = pl.group_of[(("v", "h"), 1)]
    assert gid == pl.group_of[(("v", "r"), 1)] == pl.group_of[(("p", "b.weight", "y", 1), 1)]
    assert gid == pl.group_of[(("p", "a.weight", "h", 1), 0)] == pl.group_of[(("p", "a.bias", "h", 2), 0)]
    assert pl.removed[gid].tolist() == [False, True, False]
    assert alive(pl, "h", "channels.linear.drop_row") == [False, True, False]  # the producer stops computing it
    assert alive(pl, "r", "channels.relu.drop_channel") == [False, True, False]
    assert alive(pl, "y", "channels.linear.fold_const") == [False, True, False]  # the reader folds relu(bias[1])
    # nothing else goes
    assert sum(int(r.sum()) for r in pl.removed) == 1
    # the facts the fold rests on: channel 1 of h is bias[1], of r relu(bias[1])
    known, value = pl.graph.facts["h"].const[1]
    assert known.tolist() == [False, True, False] and float(value[1]) == float(p.weights["a.bias"][1])
    known, value = pl.graph.facts["r"].const[1]
    assert known.tolist() == [False, True, False] and float(value[1]) == float(p.weights["a.bias"][1].relu())


def test_zero_column_removes_the_unread_channel(rules):
    pl, _ = planned(rules, program(MLP, zero=[("b.weight", (slice(None), 2))]))
    assert removed(pl, ("v", "h"), 1) == [False, False, True]
    assert alive(pl, "y", "channels.linear.unused_col") == [False, False, True]
    assert alive(pl, "h", "channels.linear.drop_row") == [False, False, True]


def test_inputs_and_outputs_are_pinned(rules):
    # a zero column of the first layer: input feature 0 is not read, but %x is the network's input;
    # a zero row of the last layer: output channel 0 is constant, but %y is the network's output
    pl, _ = planned(rules, program(MLP, zero=[("a.weight", (slice(None), 0)), ("b.weight", 0)]))
    assert not pl.any()
    assert "network input %x" in pl.blocked[pl.group_of[(("v", "x"), 1)]]
    assert "network output %y" in pl.blocked[pl.group_of[(("v", "y"), 1)]]
    assert "symbolic size" in pl.blocked[pl.group_of[(("v", "h"), 0)]]  # the batch axis


def test_a_channel_only_one_reader_of_a_shared_value_can_drop_is_not_planned(rules):
    # channel 0: neither reader reads it; channel 1: only %y ignores it, %z reads it
    p = program(SHARED, zero=[("b.weight", (slice(None), 0)), ("b.weight", (slice(None), 1)),
                              ("c.weight", (slice(None), 0))])
    pl, _ = planned(rules, p)
    assert removed(pl, ("v", "r"), 1) == [True, False, False]
    # the columns of both readers are in the shared group: each reader is cut by its own site
    gid = pl.group_of[(("v", "r"), 1)]
    assert pl.group_of[(("p", "b.weight", "y", 1), 1)] == gid == pl.group_of[(("p", "c.weight", "z", 1), 1)]
    assert alive(pl, "y", "channels.linear.unused_col") == [True, False, False]
    assert alive(pl, "z", "channels.linear.unused_col") == [True, False, False]


def test_a_reader_with_no_site_for_a_group_pins_it(rules):
    p = program(SHARED, zero=[("b.weight", (slice(None), 1))])  # %z reads every channel of %r
    pl, _ = planned(rules, p)
    gid = pl.group_of[(("v", "r"), 1)]
    assert not pl.removed[gid].any()
    assert any(why.startswith("%z = linear(...) has no certified rule that removes") for why in pl.blocked[gid])


def test_a_parameter_two_layers_read_is_cut_only_where_both_readers_allow(rules):
    # cut per reader, a.weight would become two tensors (31 parameters -> 39): its readers share groups
    text = """graph m(%x: f64[N, 4]) -> (f64[N, 2], f64[N, 2]) {
  param @a.weight: f64[3, 4]
  param @a.bias: f64[3]
  param @b.weight: f64[2, 3]
  param @b.bias: f64[2]
  param @c.weight: f64[2, 3]
  param @c.bias: f64[2]
  %h1 = linear(%x, @a.weight, @a.bias) : f64[N, 3]
  %h2 = linear(%x, @a.weight, @a.bias) : f64[N, 3]
  %y = linear(%h1, @b.weight, @b.bias) : f64[N, 2]
  %z = linear(%h2, @c.weight, @c.bias) : f64[N, 2]
  return %y, %z
}
"""
    pl, _ = planned(rules, program(text, zero=[("b.weight", (slice(None), 0))]))
    assert pl.group_of[(("p", "a.weight", "h1", 1), 0)] == pl.group_of[(("p", "a.weight", "h2", 1), 0)]
    assert removed(pl, ("p", "a.weight", "h1", 1), 0) == [False, False, False]  # %z reads h2's unit 0
    both = program(text, zero=[("b.weight", (slice(None), 0)), ("c.weight", (slice(None), 0))])
    pl, _ = planned(rules, both)
    assert removed(pl, ("p", "a.weight", "h1", 1), 0) == [True, False, False]
    assert removed(pl, ("p", "a.weight", "h2", 1), 0) == [True, False, False]


def test_channels_of_an_add_go_from_both_writers(rules):
    pl, _ = planned(rules, program(RESIDUAL, zero=[("b.weight", (slice(None), 0))]))
    gid = pl.group_of[(("v", "s"), 1)]
    assert gid == pl.group_of[(("v", "h1"), 1)] == pl.group_of[(("v", "h2"), 1)]
    assert pl.removed[gid].tolist() == [True, False, False]
    assert alive(pl, "h1", "channels.linear.drop_row") == [True, False, False]
    assert alive(pl, "h2", "channels.linear.drop_row") == [True, False, False]
    assert alive(pl, "s", "channels.add.drop_channel") == [True, False, False]


def test_a_constant_channel_of_one_writer_of_an_add_stays(rules):
    # h1's channel 1 is constant, h2's is not: their sum is not, and the add needs both
    pl, _ = planned(rules, program(RESIDUAL, zero=[("a.weight", 1)]))
    assert not pl.any()


def test_one_channel_of_a_group_is_kept(rules):
    every_column = [("b.weight", (slice(None), j)) for j in range(3)]
    pl, _ = planned(rules, program(MLP, zero=every_column))
    assert removed(pl, ("v", "h"), 1) == [True, True, False]  # a zero-width tensor is no network
    pl, _ = planned(rules, program(MLP, zero=every_column), keep_one=False)
    assert removed(pl, ("v", "h"), 1) == [True, True, True]


def test_structural_sites_ignore_conditions_on_weights(rules):
    rs, fn = rules
    p = program(MLP)
    g = Graph.of(p, rs.ops)
    book = RuleBook(rs)
    propagate(g, book, fn)
    assert not [s for s in build_sites(g, book, fn) if s.cr.rule.name == "channels.linear.unused_col"]
    (s,) = [s for s in build_sites(g, book, fn, structural=True)
            if s.cr.rule.name == "channels.linear.unused_col" and s.node.name == "y"]
    assert s.ok.tolist() == [True, True, True] and s.n == 3
    assert [(t.name, t.key, t.axis, t.pos.tolist()) for t in s.ties] == [
        ("x", ("v", "r"), 1, [0, 1, 2]), ("weight", ("p", "b.weight", "y", 1), 1, [0, 1, 2])]


def test_groups_of_without_sites_are_one_per_axis():
    p = sr_ir.parse(MLP)
    rs = default_rules()
    g = Graph.of(p, rs.ops)
    groups, group_of = groups_of(g, [])
    rank = lambda k: (g.types[k[1]] if k[0] == "v" else p.params[k[1]]).rank
    axes = {(k, ax) for n in p.nodes for k, _ in slot_keys(n) for ax in range(rank(k))}
    assert len(axes) == 14  # x, h, r, y: 2 axes each; two weights: 2; two biases: 1
    assert set(group_of) == axes
    assert len(groups) == len(axes)
    assert groups[group_of[(("p", "a.weight", "h", 1), 0)]].size == 3
    assert groups[group_of[(("v", "x"), 0)]].size == -1  # symbolic batch


def test_uncertified_rules_make_no_sites(rules):
    rs, fn = rules
    p = program(MLP, zero=[("b.weight", (slice(None), 2))])
    book = RuleBook(rs, certify=lambda r, s: "not proved")
    g = Graph.of(p, rs.ops)
    propagate(g, book, fn)
    assert build_sites(g, book, fn) == []
    assert not plan(g, []).any()
    assert book.refused.get("channels.linear.unused_col") == "not proved"
    assert not book.used
