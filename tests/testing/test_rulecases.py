"""The rule-case runner (sr_ir/testing/rulecases.py): its directive parser, the weights it builds, the
comparison with the expected text, the update mode, and that its numeric check is not vacuous."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

import sr_ir
from sr_ir.errors import VerificationError
from sr_ir.testing.rulecases import (
    UPDATE_ENV,
    DirectiveError,
    build_weights,
    check_case,
    expected_path,
    find_cases,
    load_case,
    parse_directives,
    run_case,
)

PROGRAM = """graph mlp(%x: f64[N, 4]) -> (f64[N, 3]) {
  param @fc1.weight: f64[5, 4]
  param @fc1.bias: f64[5]
  param @fc2.weight: f64[3, 5]
  param @fc2.bias: f64[3]
  buffer @bn.running_var: f64[5]
  %h = linear(%x, @fc1.weight, @fc1.bias) : f64[N, 5]
  %y = linear(%h, @fc2.weight, @fc2.bias) : f64[N, 3]
  return %y
}
"""

DEAD_ROW = """# A plain comment: not a directive.
# seed: 0
# set: @fc1.weight[2, :] = 0
# set: @fc1.bias[2] = 0.7
graph mlp(%x: f64[N, 4]) -> (f64[N, 3]) {
  param @fc1.weight: f64[5, 4]
  param @fc1.bias: f64[5]
  param @fc2.weight: f64[3, 5]
  param @fc2.bias: f64[3]
  %h = linear(%x, @fc1.weight, @fc1.bias) : f64[N, 5]
  %y = linear(%h, @fc2.weight, @fc2.bias) : f64[N, 3]
  return %y
}
"""

DEAD_ROW_EXPECTED = """graph mlp(%x: f64[N, 4]) -> (f64[N, 3]) {
  param @fc1.weight: f64[4, 4]
  param @fc1.bias: f64[4]
  param @fc2.weight: f64[3, 4]
  param @fc2.bias: f64[3]
  %h = linear(%x, @fc1.weight, @fc1.bias) : f64[N, 4]
  %y = linear(%h, @fc2.weight, @fc2.bias) : f64[N, 3]
  return %y
}
"""


def _error(text: str, name: str = "case.sr") -> str:
    with pytest.raises(DirectiveError) as e:
        parse_directives(text, name)
    msg = str(e.value)
    assert "\n" not in msg, "a directive error is one line"
    return msg


# ---- good directives ----------------------------------------------------------------------------
def test_directives_parse():
    d = parse_directives(
        "# seed: 7\n"
        "#set: @fc1.weight[2, :] = 0\n"
        "  #  set :  @fc1.bias[-1] = -0.25\n"
        "# set: @fc2.weight[:, 1:3] = 1e-3\n"
        "# set: @fc2.weight[0:, :2] = .5\n"
        "# set: @fc2.bias = 2\n"
        "# rules: examples/rules_ext\n"
        "# dims: N=2, S1=5\n"
        "# Note: capitalized, a plain comment\n"
        "# a comment: with a colon after more than one word\n",
        "c.sr",
    )
    assert d.seed == 7
    assert [(s.target, s.index, s.value) for s in d.sets] == [
        ("fc1.weight", (2, slice(None, None)), 0.0),
        ("fc1.bias", (-1,), -0.25),
        ("fc2.weight", (slice(None, None), slice(1, 3)), 1e-3),
        ("fc2.weight", (slice(0, None), slice(None, 2)), 0.5),
        ("fc2.bias", None, 2.0),
    ]
    assert (d.sets[0].loc.line, d.sets[0].loc.col) == (2, 7)
    assert d.sets[2].describe() == "@fc2.weight[:, 1:3]"
    assert [r for r, _ in d.rules] == ["examples/rules_ext"]
    assert d.dims == {"N": 2, "S1": 5}


def test_defaults_without_directives():
    d = parse_directives(PROGRAM, "p.sr")
    assert (d.seed, d.sets, d.rules, d.dims) == (0, [], [], {})


def test_the_ir_parser_reads_directive_lines_as_comments():
    p = sr_ir.parse(DEAD_ROW, "dead_row.sr")
    assert p.to_text() == sr_ir.parse(PROGRAM.replace("  buffer @bn.running_var: f64[5]\n", ""), "p.sr").to_text()


# ---- bad directives: one line, file:line:col ----------------------------------------------------
@pytest.mark.parametrize(
    "text, where, words",
    [
        ("# seed: 0\n# sed: 1\n", "case.sr:2:3", "unknown directive 'sed'"),
        ("\n\n   # seed: zero\n", "case.sr:3:12", "seed: expected an integer"),
        ("# seed: 1\n# seed: 2\n", "case.sr:2:3", "a second seed directive"),
        ("# set: fc1.weight[0] = 1\n", "case.sr:1:8", "set: expected '@name[index] = number'"),
        ("# set: @fc1.weight[0] = one\n", "case.sr:1:25", "set: expected a finite number, got 'one'"),
        ("# set: @fc1.weight[0] = 1e999\n", "case.sr:1:25", "set: expected a finite number, got '1e999'"),
        ("# set: @fc1.weight[0, 1+1] = 1\n", "case.sr:1:23", "index entry '1+1'"),
        ("# set: @fc1.weight[0, ::2] = 1\n", "case.sr:1:23", "index entry '::2'"),
        ("# dims: N=2, s=3\n", "case.sr:1:14", "dims: expected 'NAME=size'"),
        ("# dims: N=0\n", "case.sr:1:9", "N must be at least 1"),
        ("# rules: /etc\n", "case.sr:1:10", "rules: expected a directory"),
        ("  // seed: 0\n", "case.sr:1:3", "directives are '#' comments"),
    ],
)
def test_bad_directive_is_one_line_with_location(text, where, words):
    msg = _error(text)
    assert msg.startswith(where + ": "), msg
    assert words in msg, msg


def test_nothing_in_a_directive_is_evaluated(monkeypatch):
    calls = []

    def refuse(*a, **k):
        calls.append(a)
        raise AssertionError("the directive parser must not evaluate text")

    for name in ("eval", "exec", "compile"):
        monkeypatch.setattr(builtins, name, refuse)
    hostile = [
        '# set: @fc1.bias[0] = __import__("os").system("touch /tmp/pwned")',
        "# set: @fc1.bias[0] = 1 + 1",
        "# set: @fc1.bias[__import__('os')] = 1",
        "# set: @fc1.bias[0] = float('nan')",
        "# seed: 2**64",
        "# dims: N=eval('3')",
    ]
    for line in hostile:
        with pytest.raises(DirectiveError):
            parse_directives(line + "\n", "h.sr")
    assert calls == []
    assert not Path("/tmp/pwned").exists()


# ---- weights ------------------------------------------------------------------------------------
def _program():
    return sr_ir.parse(PROGRAM, "p.sr")


def test_weights_are_seeded_per_name_and_running_var_is_positive():
    p = _program()
    a = build_weights(p, parse_directives("# seed: 3\n", "a.sr"))
    b = build_weights(p, parse_directives("# seed: 3\n", "b.sr"))
    c = build_weights(p, parse_directives("# seed: 4\n", "c.sr"))
    assert set(a) == set(p.params)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["fc1.weight"], c["fc1.weight"])
    assert (a["bn.running_var"] > 0).all()
    assert all(w.dtype == torch.float64 for w in a.values())
    # a tensor's draw depends on its name only: a program with fewer tensors draws the same ones
    q = sr_ir.parse(PROGRAM.replace("  param @fc1.bias: f64[5]\n", "").replace("@fc1.weight, @fc1.bias", "@fc1.weight, none"), "q.sr")
    d = build_weights(q, parse_directives("# seed: 3\n", "d.sr"))
    assert torch.equal(d["fc2.weight"], a["fc2.weight"])


def test_set_directives_write_their_slices_in_order():
    p = _program()
    w = build_weights(p, parse_directives(
        "# set: @fc1.weight[2, :] = 0\n"
        "# set: @fc1.weight[2, 1] = 0.5\n"
        "# set: @fc2.weight[:, 1:3] = 0\n"
        "# set: @fc1.bias[-1] = 0.7\n"
        "# set: @fc2.bias = 1\n", "s.sr"))
    assert w["fc1.weight"][2].tolist() == [0.0, 0.5, 0.0, 0.0]
    assert (w["fc1.weight"][[0, 1, 3, 4]] != 0).all()
    assert (w["fc2.weight"][:, 1:3] == 0).all() and (w["fc2.weight"][:, [0, 3, 4]] != 0).all()
    assert w["fc1.bias"][4] == 0.7
    assert w["fc2.bias"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "line, words",
    [
        ("# set: @fc3.weight[0, 0] = 1", "declares no parameter or buffer @fc3.weight"),
        ("# set: @fc1.weight[0] = 1", "1 index entries, @fc1.weight has rank 2 [5, 4]"),
        ("# set: @fc1.weight[5, :] = 1", "index 5 is out of range for axis 0 of length 5"),
        ("# set: @fc1.weight[:, 3:9] = 1", "slice 3:9 is empty or out of range for axis 1 of length 4"),
        ("# set: @fc1.weight[:, 2:2] = 1", "slice 2:2 is empty"),
    ],
)
def test_set_directive_that_does_not_fit_the_program(line, words):
    d = parse_directives("\n" + line + "\n", "w.sr")
    with pytest.raises(DirectiveError) as e:
        build_weights(_program(), d)
    assert str(e.value).startswith("w.sr:2:8: "), str(e.value)
    assert words in str(e.value)


# ---- running cases ------------------------------------------------------------------------------
def _case(tmp_path: Path, text: str, expected: str | None = None, name: str = "dead_row.sr") -> Path:
    p = tmp_path / "fam" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    if expected is not None:
        expected_path(p).write_text(expected)
    return p


def test_case_passes_and_finds(tmp_path):
    p = _case(tmp_path, DEAD_ROW, DEAD_ROW_EXPECTED)
    assert find_cases(tmp_path) == [p]
    res = check_case(p)
    assert res.max_rel <= 1e-12
    assert "channels.linear.fold_const" in res.report.rules_used


def test_mismatch_shows_a_unified_diff(tmp_path):
    p = _case(tmp_path, DEAD_ROW, DEAD_ROW_EXPECTED.replace("f64[4, 4]", "f64[5, 4]"))
    with pytest.raises(AssertionError) as e:
        check_case(p, display="fam/dead_row.sr")
    msg = str(e.value)
    assert "fam/dead_row.sr: the minimized program differs from dead_row.expected.sr" in msg
    assert "--- fam/dead_row.expected.sr (expected)" in msg and "+++ fam/dead_row.sr (minimized)" in msg
    assert "-  param @fc1.weight: f64[5, 4]" in msg and "+  param @fc1.weight: f64[4, 4]" in msg
    assert UPDATE_ENV in msg


def test_update_mode_writes_the_expected_file(tmp_path, monkeypatch):
    p = _case(tmp_path, DEAD_ROW)
    with pytest.raises(AssertionError, match="no dead_row.expected.sr"):
        check_case(p)
    monkeypatch.setenv(UPDATE_ENV, "1")
    check_case(p)
    assert expected_path(p).read_text() == DEAD_ROW_EXPECTED
    expected_path(p).write_text("stale\n")
    check_case(p)
    assert expected_path(p).read_text() == DEAD_ROW_EXPECTED
    monkeypatch.setenv(UPDATE_ENV, "0")
    check_case(p)  # compares again


def test_errors_point_into_the_case_file(tmp_path):
    bad_directive = _case(tmp_path, DEAD_ROW.replace("# set: @fc1.bias[2] = 0.7", "# set: @fc1.bias[9] = 0.7"), name="a.sr")
    with pytest.raises(DirectiveError, match=r"^fam/a.sr:4:8: set: @fc1.bias\[9\]: index 9 is out of range"):
        check_case(bad_directive, display="fam/a.sr")
    # the IR parser sees the file as written (directives are comments): its locations are the file's
    bad_ir = _case(tmp_path, DEAD_ROW.replace("f64[N, 5]\n  %y", "f64[N, 6]\n  %y"), name="b.sr")
    with pytest.raises(sr_ir.TypeCheckError, match=r"^fam/b.sr:10:3: "):
        check_case(bad_ir, display="fam/b.sr")


def test_the_numeric_check_catches_a_wrong_rewrite(tmp_path):
    """A forged fold that forgets the bias changes the function: the runner refuses the result, in
    update mode too, so a wrong output is never recorded as expected."""
    from sr_ir.lang.loader import default_rules
    from sr_ir.minimization import RuleBook
    from sr_ir.testing.forging import replaced, trusting

    name = "channels.linear.fold_const"
    rs = replaced(default_rules(), name,
                  f"rule {name} match y = linear(x: [*B, n], weight, bias) "
                  "where x[*B, c] == k then y = linear(drop(x, -1, c), drop(weight, 1, c), bias)")
    case = load_case(_case(tmp_path, DEAD_ROW))
    with pytest.raises(VerificationError, match="float64"):
        run_case(case, rules=rs, book=RuleBook(rs, certify=trusting({name})))
