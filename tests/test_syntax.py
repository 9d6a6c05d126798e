"""sr_ir.syntax: every syntax error of IR text and of rule text is a one-line ParseError at
file:line:col; lark's own exceptions never reach the caller."""
from __future__ import annotations

import lark
import pytest

import sr_ir
from sr_ir.errors import Loc, ParseError
from sr_ir.lang.loader import parse_rule_text
from sr_ir.syntax import describe, parsing

IR = """graph m(%x: f32[N, 4]) -> (f32[N, 4]) {
  %r = relu(%x) : f32[N, 4]
  return %r
}
"""

RULE = """rule t.x
  match y = relu(x)
  then  drop(y, -1, c) = relu(drop(x, -1, c))
"""


def _parse_error(fn, *args) -> ParseError:
    with pytest.raises(Exception) as info:
        fn(*args)
    e = info.value
    assert type(e) is ParseError, f"{type(e).__module__}.{type(e).__name__}: {e}"
    assert not isinstance(e, lark.exceptions.LarkError)
    assert e.__cause__ is None and e.__suppress_context__  # raised `from None`: no lark traceback
    assert e.loc is not None
    assert "\n" not in str(e)
    assert str(e) == f"{e.loc.file}:{e.loc.line}:{e.loc.col}: {e.message}"
    return e


def test_valid_texts_parse():
    assert [n.op for n in sr_ir.parse(IR, "m.sr").nodes] == ["relu"]
    assert parse_rule_text(RULE, "t.rules")[0].name == "t.x"


@pytest.mark.parametrize(
    "old,new,line,col,msg",
    [
        ("relu(%x)", "relu(%x", 2, 16, "unexpected colon ':' (expected COMMA, RPAR)"),
        ("%r = relu", "%r = $relu", 2, 8, "unexpected character '$'"),
        ("f32[N, 4]) {", "f32[N, 4.5]) {", 1, 36, "unexpected character '.'"),
        ("relu(%x)", "relu(%x, 3=4)", 2, 18, "unexpected equal '='"),
        # errors the tree transformer raises carry the place of the offending tree
        ("relu(%x)", "relu(%x, a=1, a=2)", 2, 22, "attribute 'a' given twice"),
        ("relu(%x)", "relu(a=1, %x)", 2, 3, "positional operand after a keyword attribute"),
    ],
)
def test_ir_syntax_errors(old, new, line, col, msg):
    bad = IR.replace(old, new, 1)
    assert bad != IR
    e = _parse_error(sr_ir.parse, bad, "model.sr")
    assert (e.loc.file, e.loc.line, e.loc.col) == ("model.sr", line, col)
    assert msg in e.message


def test_ir_truncated_text_is_unexpected_end_of_input():
    e = _parse_error(sr_ir.parse, IR[: IR.index("}")], "model.sr")
    assert e.message == "unexpected end of input"
    assert e.loc.file == "model.sr" and e.loc.line >= 3
    e = _parse_error(sr_ir.parse, "", "empty.sr")
    assert e.message == "unexpected end of input" and e.loc.file == "empty.sr"


@pytest.mark.parametrize(
    "old,new,line,col,msg",
    [
        ("relu(x)\n", "relu(x\n", 3, 3, "unexpected then 'then'"),
        ("match", "mtch", 2, 3, "unexpected rule_name 'mtch'"),
        ("-1, c)", "-1, c, )", 3, 24, "unexpected rpar ')'"),
        ("(x, -1, c))\n", "(x, -1, c)) @\n", 3, 47, "unexpected character '@'"),
        # transformer errors without a location of their own get the tree's
        ("drop(y, -1, c) = relu(drop(x, -1, c))", "y[*B, c] < 0", 3, 9,
         "a forward fact is `tensor[...] == value`, not '<'"),
        ("drop(y, -1, c) = relu(drop(x, -1, c))", "3 == 0", 3, 9, "a forward fact's left side is an indexed tensor"),
        ("  then", "  then  y[*B, c] == 0\n  then", 1, 1, "rule 't.x' has two `then` clauses"),
    ],
)
def test_rule_syntax_errors(old, new, line, col, msg):
    bad = RULE.replace(old, new, 1)
    assert bad != RULE
    e = _parse_error(parse_rule_text, bad, "t.rules")
    assert (e.loc.file, e.loc.line, e.loc.col) == ("t.rules", line, col)
    assert msg in e.message


def test_rule_truncated_text_is_unexpected_end_of_input():
    e = _parse_error(parse_rule_text, "rule\n", "t.rules")
    assert e.message == "unexpected end of input" and e.loc.file == "t.rules"


def test_expected_tokens_are_few_and_named():
    e = _parse_error(parse_rule_text, RULE.replace("then  drop", "then  then drop"), "t.rules")
    hint = e.message[e.message.index("(expected ") + len("(expected "):-1].split(", ")
    assert 1 <= len(hint) <= 6 and hint == sorted(hint)
    assert not any(h.startswith("__") for h in hint)


# ---- `parsing` itself, on a grammar of its own -----------------------------------------------------

_GRAMMAR = r"""
start: item+
item: NAME "=" INT
%import common.CNAME -> NAME
%import common.INT
%import common.WS
%ignore WS
"""


class _Boom(Exception):
    pass


def _transformer(exc: Exception):
    class T(lark.Transformer):
        def item(self, a):
            if str(a[0]) == "bad":
                raise exc
            return (str(a[0]), int(a[1]))

    return T()


def _parser():
    return lark.Lark(_GRAMMAR, parser="lalr", propagate_positions=True)


def test_parsing_returns_the_result():
    p = _parser()
    assert parsing("f.txt", lambda: _transformer(ValueError()).transform(p.parse("a = 1\nb = 2")).children) == [
        ("a", 1), ("b", 2)]


def test_parsing_wraps_lark_syntax_errors():
    p = _parser()
    e = _parse_error(parsing, "f.txt", lambda: p.parse("a = 1\nb = = 2"))
    assert e.loc == Loc("f.txt", 2, 5)
    assert e.message.startswith("unexpected equal '='")
    e = _parse_error(parsing, "f.txt", lambda: p.parse("a = 1\nb = #"))
    assert e.loc == Loc("f.txt", 2, 5) and e.message == "unexpected character '#'"
    e = _parse_error(parsing, "f.txt", lambda: p.parse("a ="))
    assert e.message == "unexpected end of input"


def test_parsing_transformer_parse_error_keeps_its_own_location_or_gets_the_trees():
    p = _parser()
    text = "a = 1\n  bad = 2"
    own = ParseError("mine", Loc("other.txt", 9, 9))
    e = _parse_error(parsing, "f.txt", lambda: _transformer(own).transform(p.parse(text)))
    assert e is own and e.loc == Loc("other.txt", 9, 9)
    e = _parse_error(parsing, "f.txt", lambda: _transformer(ParseError("no place")).transform(p.parse(text)))
    assert e.loc == Loc("f.txt", 2, 3) and e.message == "no place"


def test_parsing_other_transformer_errors_become_parse_errors_unless_passed_through():
    p = _parser()
    text = "a = 1\n  bad = 2"
    e = _parse_error(parsing, "f.txt", lambda: _transformer(ValueError("odd value")).transform(p.parse(text)))
    assert e.loc == Loc("f.txt", 2, 3) and e.message == "odd value"
    boom = _Boom("a bug")
    with pytest.raises(_Boom) as info:
        parsing("f.txt", lambda: _transformer(boom).transform(p.parse(text)), passthrough=(_Boom,))
    assert info.value is boom  # the original exception, not lark's VisitError


def test_describe_words():
    p = _parser()
    with pytest.raises(lark.exceptions.UnexpectedCharacters) as info:
        p.parse("a = 1 ?")
    assert describe(info.value) == "unexpected character '?'"
    with pytest.raises(lark.exceptions.UnexpectedToken) as info:
        p.parse("a = 1 2")
    assert describe(info.value).startswith("unexpected int '2'")


def test_a_file_that_is_not_utf8_is_a_parse_error_at_the_byte(tmp_path):
    from sr_ir.errors import ParseError
    from sr_ir.ir.persist import load
    from sr_ir.lang.loader import load_rules

    sr = tmp_path / "m.sr"
    sr.write_bytes(b"graph m(%x: f32[N, 2]) -> (f32[N, 2]) {\n  return %x \xff\n}\n")
    with pytest.raises(ParseError) as e:
        load(sr)
    assert str(e.value).startswith(f"{sr}:2:13: not UTF-8 text (byte 0xff)")
    d = tmp_path / "r"
    d.mkdir()
    (d / "bad.rules").write_bytes(b"# ok\n\xe9\n")
    with pytest.raises(ParseError, match=r"bad\.rules:2:1: not UTF-8 text \(byte 0xe9\)"):
        load_rules(extra=[d])
