"""Rule syntax: parsing into the stable AST, name resolution, errors with file:line:col."""
from pathlib import Path

import pytest

from sr_ir.errors import ParseError, TypeCheckError
from sr_ir.lang import ast as A
from sr_ir.lang.loader import load_rules
from sr_ir.lang.rule import BackwardFact, ChannelUse, ForwardFact, Rewrite
from sr_ir.resources import data_dir

FOLD = """
rule t.fold_const
  match y = linear(x: [*B, n], weight, bias)
  where x[*B, c] == k
  then  y = linear(drop(x, -1, c), drop(weight, 1, c), bias + k * weight[:, c])
"""


def _load(tmp_path: Path, text: str):
    d = tmp_path / "r"
    d.mkdir(exist_ok=True)
    (d / "t.rules").write_text(text)
    return load_rules([data_dir("rules") / "ops"], extra=[d])


def test_rewrite_rule_resolves_channel_values_and_axes(tmp_path):
    rs = _load(tmp_path, FOLD)
    r = rs.rule("t.fold_const")
    assert r.kind == "rewrite" and isinstance(r.conclusion, Rewrite)
    assert r.root.op == "linear" and r.root.result == "y"
    assert [o.param for o in r.root.operands] == ["x", "weight", "bias"]
    assert r.info.channel == "c"
    assert r.info.values == ("k",)
    assert ChannelUse("x", -1) in r.info.channel_uses and ChannelUse("weight", 1) in r.info.channel_uses
    assert r.where == (A.Cmp("==", A.Index("x", (A.Variadic("B"), A.Name("c"))), A.Name("k")),)
    assert r.ops_used == ("linear",)
    assert r.loc.line == 2 and r.where_locs[0].line == 4


def test_forward_and_backward_facts(tmp_path):
    rs = _load(tmp_path, """
rule t.dead
  match y = linear(x, weight, bias)
  where weight[c, :] == 0
  then  y[*B, c] == bias[c]
rule t.unused
  match y = linear(x, weight, bias)
  where weight[:, c] == 0
  then  unused x[*B, c]
""")
    assert isinstance(rs.rule("t.dead").conclusion, ForwardFact)
    assert isinstance(rs.rule("t.unused").conclusion, BackwardFact)
    assert ChannelUse("weight", 0) in rs.rule("t.dead").info.channel_uses


def test_text_is_normalised_and_reparses(tmp_path):
    rs = _load(tmp_path, FOLD + "\n# a comment\n")
    text = rs.rule("t.fold_const").text()
    rs2 = _load(tmp_path, text)
    assert rs2.rule("t.fold_const") == rs.rule("t.fold_const")
    assert rs2.rule("t.fold_const").text() == text


@pytest.mark.parametrize(
    "text, err, line, col",
    [
        ("rule t.x\n  match y = linear(x, w, b)\n  where w[c, :] === 0\n  then y[*B, c] == b[c]\n", ParseError, 3, 19),
        ("rule t.x\n  match y = nosuchop(x)\n  then unused x[c]\n", TypeCheckError, 1, 1),
        ("rule t.x\n  match y = linear(x, w, b)\n  then y[*B, c] <= b[c]\n", ParseError, 3, 8),
        ("rule t.x\n  match y = linear(x, w, b)\n  where w[c, :] == 0\n  then y[*B, c] == q[c]\n", TypeCheckError, 1, 1),
        ("rule t.x\n  match y = linear(x, w, b)\n  where w[c, d] == 0\n  then unused x[*B, c]\n", TypeCheckError, 1, 1),
        ("rule t.x\n  match y = linear(x, w, b)\n  where w[c, :, :] == 0\n  then unused x[*B, c]\n", TypeCheckError, 1, 1),
    ],
)
def test_errors_have_file_line_col(tmp_path, text, err, line, col):
    with pytest.raises(err) as e:
        _load(tmp_path, text)
    assert e.value.loc is not None and e.value.loc.file.endswith("t.rules")
    assert (e.value.loc.line, e.value.loc.col) == (line, col), str(e.value)


def test_op_declarations_still_parse():
    rs = load_rules([data_dir("rules") / "ops"])
    assert "linear" in rs.ops and "conv2d" in rs.ops


def test_block_drop_names_the_channel_block(tmp_path):
    rs = _load(tmp_path, """
rule t.flatten
  match y = reshape(x: [b, n, h, w], shape=s)
  where s == [b, n * h * w]
  then  drop(y, 1, c, h * w) = reshape(drop(x, 1, c), [b, (n - 1) * h * w])
""")
    r = rs.rule("t.flatten")
    blk = A.BinOp("*", A.Name("h"), A.Name("w"))
    assert ChannelUse("y", 1, blk) in r.info.channel_uses and ChannelUse("x", 1) in r.info.channel_uses
    assert "drop(y, 1, c, (h * w))" in r.text()


def test_runs_of_a_variadic_operand(tmp_path):
    rs = _load(tmp_path, """
rule t.concat
  match y = concat(us...: [b, p], x: [b, n], vs...: [b, q], dim=d)
  where d == 1
  then  drop(y, 1, width(us, 1) + c) = concat(us..., drop(x, 1, c), vs..., d)
""")
    r = rs.rule("t.concat")
    assert [(o.param, o.name, o.run) for o in r.root.operands] == [("xs", "us", True), ("xs", "x", False),
                                                                   ("xs", "vs", True)]
    assert r.info.channel == "c" and ChannelUse("x", 1) in r.info.channel_uses
    assert "concat(us...: [b, p], x: [b, n], vs...: [b, q], dim=d)" in r.text()
    assert "concat(us..., drop(x, 1, c), vs..., d)" in r.text()
    with pytest.raises(TypeCheckError, match="variadic"):
        _load(tmp_path, """
rule t.bad_run
  match y = relu(xs...: [b, n])
  then  drop(y, 1, c) = relu(drop(xs, 1, c))
""")
