"""sr_ir.lang.tensor_eval: rule expressions and side conditions evaluated on concrete tensors,
vectorized over the channel variable (one lane per channel)."""
from __future__ import annotations

import pytest
import sympy
import torch

from sr_ir.errors import Loc, SrIrError
from sr_ir.ir.types import TensorType
from sr_ir.lang.loader import parse_rule_text
from sr_ir.lang.tensor_eval import (Arr, Facts, LaneEval, Operand, RuleEvalError, align, lanes_value, lift,
                                    plain_cmp, scalar_binop)

F64 = torch.float64
N = sympy.Symbol("N", integer=True, positive=True)


def cond(text: str):
    """A side condition as the rule loader parses it."""
    r = parse_rule_text(f"rule t.x\n  match y = relu(x)\n  where {text}\n"
                        f"  then  drop(y, -1, c) = relu(drop(x, -1, c))\n", "t.rules")[0]
    assert len(r.where) == 1
    return r.where[0]


def expr(text: str):
    return cond(f"{text} == 0").left


W = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                  [1.0, -2.0, 3.0, 0.0],
                  [2.0, 2.0, 2.0, 2.0]], dtype=F64)
BIAS = torch.tensor([0.5, -1.0, 2.0], dtype=F64)


def param(t: torch.Tensor) -> Operand:
    return Operand("param", type=TensorType("f64", tuple(t.shape)), tensor=t)


def linear_eval(**kw) -> LaneEval:
    """The channel c ranges over the 3 rows of `weight`."""
    env = {"weight": param(W), "bias": param(BIAS), "padding": [1, 2], "n": N,
           "none_bias": Operand("absent"), "s": Operand("scalar", scalar=1.5)}
    return LaneEval(env, {"relu": torch.relu}, channel="c", lanes=torch.arange(3), values=("k",), **kw)


def value_eval(lanes: int = 4) -> LaneEval:
    """x: an activation [N, 4] whose channels 0, 2, 3 are known constants 0, 2, 2 (channel 1 unknown)."""
    known = torch.tensor([True, False, True, True])
    value = torch.tensor([0.0, 9.0, 2.0, 2.0], dtype=F64)
    source = torch.tensor([[True, False], [False, False], [False, True], [True, True]])
    x = Operand("value", type=TensorType("f64", (N, 4)), facts=Facts({1: (known, value)}, {1: source}))
    y = Operand("value", type=TensorType("f64", (N, 4)), facts=None)
    return LaneEval({"x": x, "y": y}, {}, channel="c", lanes=torch.arange(lanes), values=("k",))


def arr(ev: LaneEval, text: str) -> Arr:
    v = ev.expr(expr(text))
    assert isinstance(v, Arr), v
    return v


# ---- values: lift, align, scalars -----------------------------------------------------------------

def test_lift_plain_values():
    assert lift(3).t.dtype == torch.int64 and int(lift(3).t) == 3 and lift(3).names == ()
    assert lift(2.5).t.dtype == F64 and float(lift(2.5).t) == 2.5
    assert lift(True).t.dtype == torch.bool
    assert lift(sympy.Integer(4)).t.dtype == torch.int64 and int(lift(sympy.Integer(4)).t) == 4
    assert int(lift(N + 2 - N).t) == 2  # a dim expression that is a number
    a = Arr(torch.zeros(3, 2), ("#c",))
    assert lift(a) is a and a.ndata == 1 and a.data_shape == (2,)
    with pytest.raises(RuleEvalError, match="symbolic"):
        lift(N)
    with pytest.raises(RuleEvalError, match="not a number"):
        lift("tanh")


def test_align_matches_named_axes_by_name_and_data_axes_from_the_right():
    a = Arr(torch.arange(3), ("#c",))  # one number per lane
    b = Arr(torch.ones(2, 4), ())  # a whole tensor: two data axes
    (ta, tb), names = align(a, b)
    assert names == ("#c",)
    assert ta.shape == (3, 1, 1) and tb.shape == (1, 2, 4)
    p = Arr(torch.arange(15).reshape(5, 3), ("j", "#c"))
    q = Arr(torch.arange(3) * 100, ("#c",))
    (tq, tp), names = align(q, p)
    assert names == ("#c", "j") and tp.shape == (3, 5) and tq.shape == (3, 1)
    assert torch.equal(tp, p.t.T)


def test_scalar_binop():
    assert scalar_binop("/", 6, 3) == 2 and isinstance(scalar_binop("/", 6, 3), int)  # exact: stays an int
    assert scalar_binop("/", 7, 2) == 3.5
    assert scalar_binop("//", 7, 2) == 3 and scalar_binop("%", 7, 2) == 1 and scalar_binop("^", 2, 5) == 32
    assert scalar_binop("-", N + 3, N) == 3 and isinstance(scalar_binop("-", N + 3, N), int)
    assert scalar_binop("*", 2, N) == 2 * N
    assert scalar_binop("+", [1, 2], [10, 20]) == [11, 22]
    assert scalar_binop("*", [1, 2], 3) == [3, 6] and scalar_binop("-", 5, [1, 2]) == [4, 3]
    with pytest.raises(RuleEvalError, match="lengths 2 and 3"):
        scalar_binop("+", [1, 2], [1, 2, 3])
    for bad in (None, "none"):
        with pytest.raises(RuleEvalError, match="cannot compute"):
            scalar_binop("+", 1, bad)
    with pytest.raises(RuleEvalError, match="unknown operator"):
        scalar_binop("<<", 1, 2)


def test_plain_cmp():
    assert plain_cmp("==", [1, 2], (1, 2)) and plain_cmp("!=", [1, 2], [1, 2, 3])
    assert plain_cmp("==", 2 * N, N + N) and plain_cmp("!=", N, N + 1)
    assert plain_cmp("<", N, N + 1) and not plain_cmp(">=", N, N + 1)
    assert plain_cmp("==", "tanh", "tanh") and plain_cmp("!=", None, 0)
    assert plain_cmp("<=", 2, 2.0)
    with pytest.raises(RuleEvalError, match="every size"):
        plain_cmp("<", N, 3)  # true for some N only
    with pytest.raises(RuleEvalError, match="== or != only"):
        plain_cmp("<", [1], [2])
    with pytest.raises(RuleEvalError, match="cannot order"):
        plain_cmp("<", None, 1)


# ---- expressions over the channel variable ---------------------------------------------------------

def test_the_channel_variable_is_one_lane_per_channel():
    ev = linear_eval()
    c = arr(ev, "c * 2 + 1")
    assert c.names == ("#c",) and c.t.dtype == torch.int64 and c.t.tolist() == [1, 3, 5]
    assert ev.n_lanes == 3


def test_reads_of_a_parameter():
    ev = linear_eval()
    row = arr(ev, "weight[c, :]")
    assert row.names == ("#c",) and row.data_shape == (4,) and torch.equal(row.t, W)
    col = arr(ev, "weight[:, c]")
    assert col.data_shape == (3,) and torch.equal(col.t, W[:, :3].T)
    assert torch.equal(arr(ev, "bias[c] + 1").t, BIAS + 1)
    assert torch.equal(arr(ev, "-bias[c]").t, -BIAS)
    assert torch.equal(arr(ev, "weight[c, 2] * bias[c]").t, W[:, 2] * BIAS)
    whole = arr(ev, "weight")
    assert whole.names == () and torch.equal(whole.t, W)
    assert torch.equal(arr(ev, "weight[c, c + 1]").t, torch.stack([W[i, i + 1] for i in range(3)]))


def test_a_lane_value_times_a_whole_tensor_broadcasts_data_axes():
    ev = linear_eval()
    v = arr(ev, "bias[c] * weight")
    assert v.names == ("#c",) and v.t.shape == (3, 3, 4)
    assert torch.equal(v.t[1], BIAS[1] * W)


def test_reads_outside_a_parameter_raise_and_padded_reads_are_zero():
    ev = linear_eval()
    with pytest.raises(RuleEvalError, match="reads outside axis 0 of weight"):
        ev.expr(expr("weight[c + 1, 0]"))
    with pytest.raises(RuleEvalError, match="indexes 1 axes of a rank-2 tensor"):
        ev.expr(expr("weight[c]"))
    assert arr(ev, "padded(weight[c - 1, 0])").t.tolist() == [0.0, 0.0, 1.0]
    assert arr(ev, "padded(weight[c + 1, 2])").t.tolist() == [3.0, 2.0, 0.0]


def test_sum_reduces_its_index_variable():
    ev = linear_eval()
    assert arr(ev, "sum(j < 4, weight[c, j])").t.tolist() == [0.0, 2.0, 8.0]
    assert arr(ev, "sum(j < 4, weight[c, j] * weight[c, j])").t.tolist() == [0.0, 14.0, 16.0]
    # a term that does not depend on the variable counts once per index
    v = arr(ev, "sum(j < 3, 2)")
    assert v.names == () and int(v.t) == 6
    # nested: the whole matrix, then one number
    assert float(arr(ev, "sum(i < 3, sum(j < 4, weight[i, j]))").t) == float(W.sum())
    assert "j" not in ev.env and "i" not in ev.env  # index variables do not leak
    # a sum may rebind the channel variable; the channel's binding comes back afterwards
    v = arr(ev, "sum(c < 4, weight[1, c])")
    assert v.names == () and float(v.t) == 2.0
    assert arr(ev, "c").t.tolist() == [0, 1, 2]


def test_tensor_builds_a_data_axis_from_its_index_variable():
    ev = linear_eval()
    v = arr(ev, "tensor(j < 4, weight[c, j] * 2)")
    assert v.names == ("#c",) and v.data_shape == (4,) and torch.equal(v.t, W * 2)
    v = arr(ev, "tensor(j < 2, bias[c])")  # constant along j: expanded
    assert v.t.shape == (3, 2) and torch.equal(v.t, BIAS[:, None].expand(3, 2))


def test_builtins_and_the_function_table():
    ev = linear_eval()
    assert ev.expr(expr("dim(weight, 1)")) == 4
    assert ev.expr(expr("len(padding)")) == 2
    assert ev.expr(expr("padding[1]")) == 2
    assert ev.expr(expr("padding[0] + n")) == N + 1
    assert ev.expr(expr("choose(1, 1, 10, 20)")) == 10 and ev.expr(expr("choose(1, 2, 10, 20)")) == 20
    assert ev.expr(expr("opt(none_bias[c], 7)")) == 7
    assert torch.equal(arr(ev, "opt(bias[c], 7)").t, BIAS)
    assert ev.expr(expr("either(none_bias, s)")) == 1.5
    assert ev.expr(expr("s * 2")) == 3.0
    assert arr(ev, "relu(bias[c])").t.tolist() == [0.5, 0.0, 2.0]
    assert arr(ev, "max(bias[c], 0)").t.tolist() == [0.5, 0.0, 2.0]
    assert arr(ev, "min(bias[c], 0)").t.tolist() == [0.0, -1.0, 0.0]
    assert ev.expr(expr("max(2, 5)")) == 5 and ev.expr(expr("max(n, 1)")) == N
    assert arr(ev, "step(bias[c])").t.tolist() == [1, 0, 1]


@pytest.mark.parametrize("text,msg", [
    ("nope", "'nope' is not known at this match"),
    ("frob(bias[c])", "no torch definition of the function 'frob'"),
    ("none_bias[c]", "optional operand 'none_bias' is absent here"),
    ("padding[c]", "a list attribute read at a channel-dependent index"),
    ("padding[5]", "reads past the end of [1, 2]"),
    ("sum(j < n, bias[j])", "the range j < n needs a number"),
    ("weight[c, 0.5]", "not an integer"),
])
def test_what_cannot_be_evaluated_raises_rule_eval_error(text, msg):
    ev = linear_eval(rule="t.fold", where=Loc("t.rules", 3, 9))
    with pytest.raises(RuleEvalError) as info:
        ev.expr(expr(text))
    e = info.value
    assert isinstance(e, SrIrError)
    assert msg in e.message and e.message.startswith("rule 't.fold': ")
    assert str(e).startswith("t.rules:3:9: ")


# ---- conditions -------------------------------------------------------------------------------------

def test_conditions_hold_per_lane():
    ev = linear_eval()
    assert ev.holds(cond("weight[c, :] == 0")).tolist() == [True, False, False]
    assert ev.holds(cond("bias[c] > 0")).tolist() == [True, False, True]
    assert ev.holds(cond("bias[c] > 0 and weight[c, 0] == 0")).tolist() == [True, False, False]
    assert ev.holds(cond("bias[c] > 0 or weight[c, 1] < 0")).tolist() == [True, True, True]
    assert ev.holds(cond("not bias[c] > 0")).tolist() == [False, True, False]
    assert ev.holds(cond("weight[c, :] != 0")).tolist() == [False, False, True]  # every entry
    # conditions that do not depend on the channel hold in every lane or none
    assert ev.holds(cond("1 < 2")).tolist() == [True, True, True]
    assert ev.holds(cond("padding == [1, 3]")).tolist() == [False, False, False]
    assert ev.holds(cond("weight[0, :] == 0")).tolist() == [True, True, True]
    assert ev.holds(cond("weight == 0")).tolist() == [False, False, False]


def test_quantifiers():
    ev = linear_eval()
    assert ev.holds(cond("forall j < 4: weight[c, j] >= 0")).tolist() == [True, False, True]
    assert ev.holds(cond("exists j < 4: weight[c, j] < 0")).tolist() == [False, True, False]
    assert ev.holds(cond("exists j < 4: weight[c, j] == 3")).tolist() == [False, True, False]
    # over an empty range
    assert ev.holds(cond("forall j < 0: bias[c] > 100")).tolist() == [True, True, True]
    assert ev.holds(cond("exists j < 0: bias[c] > 100")).tolist() == [False, False, False]


def test_a_value_variable_is_bound_where_the_slice_is_uniform():
    ev = linear_eval()
    assert ev.holds(cond("weight[c, :] == k")).tolist() == [True, False, True]
    k = ev.env["k"]
    assert k.names == ("#c",) and k.t.tolist() == [0.0, 0.0, 2.0]
    # once bound, k is an ordinary value
    assert ev.holds(cond("bias[c] + k > 1")).tolist() == [False, False, True]


def test_channel_facts_of_an_activation():
    ev = value_eval()
    assert ev.holds(cond("x[*B, c] == k")).tolist() == [True, False, True, True]
    assert ev.env["k"].t.tolist() == [0.0, 0.0, 2.0, 2.0]
    assert ev.sources.tolist() == [[True, False], [False, False], [False, True], [True, True]]
    ev = value_eval()
    assert ev.holds(cond("x[*B, c] == 2")).tolist() == [False, False, True, True]
    assert ev.holds(cond("x[:, c] == 0")).tolist() == [True, False, False, False]
    assert ev.holds(cond("x[*B, 0] == 0")).tolist() == [True] * 4  # a fixed channel: every lane
    # a value without facts, and an axis without facts, know nothing
    assert ev.holds(cond("y[*B, c] == 0")).tolist() == [False] * 4
    assert ev.holds(cond("x[c, :] == 0")).tolist() == [False] * 4


def test_channel_facts_of_a_block():
    ev = value_eval(lanes=2)  # block c of 2 channels: {0, 1}, {2, 3}
    assert ev.holds(cond("x[*B, block(c, 2)] == k")).tolist() == [False, True]
    assert ev.env["k"].t.tolist() == [0.0, 2.0]
    assert ev.sources.tolist() == [[False, False], [True, True]]


def test_an_activations_entries_are_not_readable():
    ev = value_eval()
    with pytest.raises(RuleEvalError, match="activation"):
        ev.expr(expr("x"))
    with pytest.raises(RuleEvalError, match="only parameters are known"):
        ev.expr(expr("x[0, c]"))
    with pytest.raises(RuleEvalError, match="names one axis"):
        ev.holds(cond("x[c, c] == 0"))


def test_without_a_channel_there_is_one_lane():
    ev = LaneEval({"bias": param(BIAS)}, {})
    assert ev.n_lanes == 1
    assert ev.holds(cond("bias[0] > 0")).tolist() == [True]
    assert ev.holds(cond("forall i < 3: bias[i] > 0")).tolist() == [False]
    assert ev.holds(cond("exists i < 3: bias[i] > 1")).tolist() == [True]


def test_unused_conditions_are_not_evaluated_here():
    ev = value_eval()
    w = parse_rule_text("rule t.u\n  match y = relu(x)\n  where unused y[*B, c]\n"
                        "  then  drop(y, -1, c) = relu(drop(x, -1, c))\n", "t.rules")[0].where[0]
    with pytest.raises(RuleEvalError, match="unused"):
        ev.holds(w)


# ---- helpers -----------------------------------------------------------------------------------------

def test_lanes_value():
    assert lanes_value(Arr(torch.tensor([1.0, 2.0]), ("#c",)), 2).tolist() == [1.0, 2.0]
    v = lanes_value(Arr(torch.ones(2, 3)), 4)  # not channel-dependent: broadcast to every lane
    assert v.shape == (4, 2, 3)
    assert lanes_value(5, 3).tolist() == [5, 5, 5]
    with pytest.raises(RuleEvalError, match="bound variable"):
        lanes_value(Arr(torch.ones(2, 3), ("#c", "j#1")), 2)


def test_facts_select_keeps_the_remaining_channels():
    f = Facts({1: (torch.tensor([True, False, True]), torch.tensor([1.0, 0.0, 3.0], dtype=F64))},
              {1: torch.tensor([[True], [False], [True]])})
    f.select(1, torch.tensor([False, True, True]))
    k, v = f.const[1]
    assert k.tolist() == [False, True] and v.tolist() == [0.0, 3.0]
    assert f.source[1].tolist() == [[False], [True]]
    f.select(0, torch.tensor([True]))  # an axis without facts: nothing to do
    assert list(f.const) == [1]
