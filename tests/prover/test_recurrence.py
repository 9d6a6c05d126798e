"""Recurrent ops (sr_ir/lang/recurrence.py): the unrolled `means` of lstm / gru is what torch computes,
and a channel rule about one is proved by induction over the steps, for every sequence length: rules
that hold for one step from the zero state but not for longer sequences are refuted."""
import random
from fractions import Fraction

import pytest
import torch

import sr_ir.nn.functional as P
from sr_ir.lang.loader import load_rules
from sr_ir.prover.algebra import Exact
from sr_ir.prover.axioms import Theory
from sr_ir.prover.semantics import Evaluator, Tensor
from sr_ir.prover.tiers import prove_rule
from sr_ir.resources import data_dir

LIB = load_rules()


def _leaf(name: str, shape: tuple, rng: random.Random) -> Tensor:
    vals: dict = {}
    return Tensor(name, shape, lambda idx: vals.setdefault(idx, Fraction(rng.randint(-9, 9), 7)))


def _torch(t: Tensor) -> torch.Tensor:
    out = torch.zeros(t.shape, dtype=torch.float64)
    for idx in torch.cartesian_prod(*[torch.arange(s) for s in t.shape]).reshape(-1, len(t.shape)).tolist():
        out[tuple(idx)] = float(t[tuple(idx)])
    return out


@pytest.mark.parametrize("op,gates", [("lstm", 4), ("gru", 3)])
@pytest.mark.parametrize("with_state", [False, True])
def test_unrolled_means_is_torchs_layer(op, gates, with_state):
    rng = random.Random(0)
    b, t, n, m = 2, 4, 3, 2
    ev = Evaluator(Exact("real", theory=Theory((), LIB.vocabulary)), LIB.ops)
    ts = {"x": _leaf("x", (b, t, n), rng), "weight_ih": _leaf("wi", (gates, m, n), rng),
          "weight_hh": _leaf("wh", (gates, m, m), rng), "bias_ih": _leaf("bi", (gates, m), rng),
          "bias_hh": _leaf("bh", (gates, m), rng)}
    if with_state:
        ts["h0"] = _leaf("h0", (b, m), rng)
        if op == "lstm":
            ts["c0"] = _leaf("c0", (b, m), rng)
    y = ev.op(LIB.ops[op], ts, {})
    assert y.shape == (b, t, m)
    want = getattr(P, op)(*[_torch(v) for v in ts.values()])
    torch.testing.assert_close(_torch(y), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["lstm.dead_unit", "gru.dead_unit", "channels.lstm.drop_unit",
                                  "channels.gru.drop_unit"])
def test_library_rules_are_proved(name):
    res = prove_rule(LIB.rule(name), LIB.ops)
    assert res.status == "proved", res.message


def _load(rule_dir, text):
    return load_rules([data_dir("rules") / "ops"], extra=[rule_dir("t.rules", text)])


def test_a_fact_true_for_one_step_only_is_refuted(rule_dir):
    # input rows and biases zero, recurrent rows not: from the zero state the first step gives h = 0,
    # the second reads the other units' states: only an induction over arbitrary states sees it
    rs = _load(rule_dir, """
rule t.lstm_input_rows_zero
  match y = lstm(x: [b, t, n], weight_ih: [4, m, n], weight_hh: [4, m, m], bias_ih, bias_hh)
  axioms sigmoid_half, tanh_zero
  where weight_ih[:, c, :] == 0, bias_ih[:, c] == 0, bias_hh[:, c] == 0
  then  y[:, :, c] == 0
""")
    res = prove_rule(rs.rule("t.lstm_input_rows_zero"), rs.ops)
    assert res.status in ("refuted", "refuted-uf"), res.message


def test_a_drop_of_a_unit_others_read_is_refuted(rule_dir):
    rs = _load(rule_dir, """
rule t.gru_drop_read_unit
  match y = gru(x: [b, t, n], weight_ih: [3, m, n], weight_hh: [3, m, m], bias_ih, bias_hh)
  then  drop(y, -1, c) = gru(x, drop(weight_ih, 1, c),
          tensor(q < 3, r < m - 1, k < m - 1, weight_hh[q, r + step(r - c), k + step(k - c)]),
          drop(bias_ih, 1, c), drop(bias_hh, 1, c))
""")
    res = prove_rule(rs.rule("t.gru_drop_read_unit"), rs.ops)
    assert res.status == "refuted", res.message


def test_the_dead_unit_needs_its_recurrent_rows(rule_dir):
    # the library's dead unit without `weight_hh[:, c, :] == 0`: its own gates read the other states
    rs = _load(rule_dir, """
rule t.gru_dead_without_recurrent_rows
  match y = gru(x: [b, t, n], weight_ih: [3, m, n], weight_hh: [3, m, m], bias_ih, bias_hh)
  axioms sigmoid_half, tanh_zero
  where weight_ih[:, c, :] == 0, bias_ih[:, c] == 0, bias_hh[:, c] == 0
  then  y[:, :, c] == 0
""")
    res = prove_rule(rs.rule("t.gru_dead_without_recurrent_rows"), rs.ops)
    assert res.status in ("refuted", "refuted-uf"), res.message
