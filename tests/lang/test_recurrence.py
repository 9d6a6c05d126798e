"""Recurrent ops in rule files (`carry` / `step` clauses; sr_ir/lang/recurrence.py): what the loader
reads and what it refuses, with the op's file:line:col."""
from pathlib import Path

import pytest

from sr_ir.errors import ParseError, TypeCheckError
from sr_ir.lang import ast as A
from sr_ir.lang.loader import load_rules
from sr_ir.prover.certificates import op_semantics_text
from sr_ir.resources import data_dir

RNN = """
op rnn(x: F[b, t, n], w: F[m, n], u: F[m, m], h0: F[b, m]?) -> F[b, t, m]
  torch "x"
  carry {carry}
  step  s < t
  means {means}
"""
CARRY = "h[bi, j] = opt(h0[bi, j], 0)"
MEANS = ("h[bi, j] = tanh(sum(k < n, w[j, k] * x[bi, s, k]) + sum(k < m, u[j, k] * h[bi, k])); "
         "out[bi, s, j] = h[bi, j]")


def _load(tmp_path: Path, carry: str = CARRY, means: str = MEANS, text: str | None = None):
    d = tmp_path / "r"
    d.mkdir(exist_ok=True)
    body = text if text is not None else RNN.format(carry=carry, means=means).replace('torch "x"', 'torch "{x}"')
    (d / "t.rules").write_text(body)
    return load_rules([data_dir("rules") / "ops"], extra=[d])


def test_a_recurrence_is_read_into_the_declaration(tmp_path):
    decl = _load(tmp_path).ops["rnn"]
    rec = decl.recurrence
    assert rec.var == "s" and rec.extent == A.Name("t") and rec.names == ("h",)
    assert [d.target.base for d in decl.means] == ["h", "out"]
    # certificates cover the recurrence: another initial state is another op
    other = _load(tmp_path, carry="h[bi, j] = opt(h0[bi, j], 1)").ops["rnn"]
    assert op_semantics_text(decl) != op_semantics_text(other)


def test_the_library_declares_lstm_and_gru():
    rs = load_rules()
    assert rs.ops["lstm"].recurrence.names == ("h", "c") and rs.ops["gru"].recurrence.names == ("h",)


@pytest.mark.parametrize("carry,means,message", [
    ("h[bi] = 0", MEANS, "indexed like `out` without the step index"),
    (CARRY, "h[bi, j] = h[bi, j]; out[bi, j] = h[bi, j]", "with the step index 's' once"),
    (CARRY, "h[bi, j] = 1; h[bi, j] = 2; out[bi, s, j] = h[bi, j]", "defined twice"),
    ("h[bi, j] = x[bi, s, j]", MEANS, "reads the step index"),
    (CARRY, "h[bi, j] = g[bi, j]; out[bi, s, j] = h[bi, j]", "g"),
])
def test_ill_formed_recurrences_are_refused_at_the_op(tmp_path, carry, means, message):
    with pytest.raises((TypeCheckError, ParseError), match=message) as e:
        _load(tmp_path, carry=carry, means=means)
    assert "t.rules:2:1" in str(e.value)


def test_carry_without_step_is_refused(tmp_path):
    text = RNN.format(carry=CARRY, means=MEANS).replace('torch "x"', 'torch "{x}"').replace("  step  s < t\n", "")
    with pytest.raises(ParseError, match="`carry` without `step`"):
        _load(tmp_path, text=text)
