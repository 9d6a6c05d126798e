"""`sr-ir prove`: exit codes, certificates (written, current, stale, missing), --check, --json."""
import json
from pathlib import Path

import pytest

from sr_ir.cli.main import main
from sr_ir.lang.loader import load_rules
from sr_ir.prover import certificates

GOOD = """
rule u.dead_row
  match y = linear(x, weight, bias)
  where weight[c, :] == 0
  then  y[*B, c] == bias[c]
"""
WRONG = Path(__file__).resolve().parent / "wrong_rules"


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_prove_writes_certificate_then_check_passes_then_edit_makes_it_stale(rule_dir, capsys):
    d = rule_dir("u.rules", GOOD)
    code, out, _ = run(["prove", str(d), "--rules", str(d), "--json"], capsys)
    assert code == 0
    res = json.loads(out)["results"]
    assert [(r["rule"], r["status"], r["tier"]) for r in res] == [("u.dead_row", "proved", "parametric")]
    certs = list((d / "proofs").glob("u.dead_row.*.json"))
    assert len(certs) == 1
    data = json.loads(certs[0].read_text())
    assert data["result"] == "proved" and data["tier"] == "parametric" and "z3" in data["solvers"]
    # every size and attribute value the bounded tier checked, the runs of dims at 0, 1 and 2 axes,
    # and the template checks the proof relied on
    assert len(data["bounded"]) == len(data["sizes"]) >= 3
    assert {len(i["dims"]["*B"]) for i in data["bounded"]} == {0, 1, 2}
    assert data["tested"] and set(data["templates"]) == {"linear"}

    rs = load_rules(extra=[d])
    r = rs.rule("u.dead_row")
    assert certificates.status(r, rs) == "current"
    certificates.require_certified([r], rs)
    assert run(["prove", str(d), "--rules", str(d), "--check"], capsys)[0] == 0

    (d / "u.rules").write_text(GOOD.replace("bias[c]", "bias[c] + 0"))
    rs2 = load_rules(extra=[d])
    r2 = rs2.rule("u.dead_row")
    assert certificates.status(r2, rs2) == "stale"
    with pytest.raises(certificates.UncertifiedRule, match="u.dead_row.*sr-ir prove"):
        certificates.require_certified([r2], rs2)
    code, out, _ = run(["prove", str(d), "--rules", str(d), "--check"], capsys)
    assert code == 1 and "stale" in out


def test_missing_certificate(rule_dir):
    d = rule_dir("u.rules", GOOD)
    rs = load_rules(extra=[d])
    assert certificates.status(rs.rule("u.dead_row"), rs) == "missing"


def test_wrong_rules_exit_1_and_print_counterexample_with_replay(capsys):
    code, out, _ = run(["prove", str(WRONG), "--match", "wrong.drop_zero_row*", "--no-condition-check"], capsys)
    assert code == 1
    assert "drop_zero_row_keep_bias.rules:3:1: rule 'wrong.drop_zero_row_keep_bias' is wrong" in out
    assert "float64 replay through the emitted PyTorch code" in out
    diff = float(out.split("max |lhs - rhs| = ")[1].split()[0])
    assert diff > 0.5
    assert not list(WRONG.glob("proofs/*.json"))


def test_parse_error_exits_3_with_location(rule_dir, capsys):
    d = rule_dir("bad.rules", "rule u.bad\n  match y = linear(x, w, b)\n  where w[c, :] === 0\n  then unused x[c]\n")
    code, _, err = run(["prove", str(d), "--rules", str(d)], capsys)
    assert code == 3
    assert "bad.rules:3:19" in err and "Traceback" not in err


def test_timeout_is_unknown_exit_2(rule_dir, capsys):
    d = rule_dir("u.rules", GOOD)
    code, out, _ = run(["prove", str(d), "--rules", str(d), "--timeout", "0.01", "--json"], capsys)
    assert code == 2
    assert json.loads(out)["results"][0]["status"] == "timeout"
    assert not list((d / "proofs").glob("*.json")) if (d / "proofs").exists() else True


def test_bundled_library_is_certified_and_proofs_holds_nothing_else(capsys):
    # (how fast --check is, is measured in benchmarks/prove_library.py, not here)
    code, out, _ = run(["prove", "--check", "--json"], capsys)
    data = json.loads(out)
    assert len(data["rules"]) > 40
    stale = [x for x in data["rules"] if x["state"] != "current"]
    assert code == 0 and not stale, stale
    proofs = Path(data["rules"][0]["certificate"]).parent
    current = {Path(x["certificate"]).name for x in data["rules"]}
    orphans = {p.name for p in proofs.glob("*.json")} - current
    assert not orphans, f"certificates of rules that no longer exist: {sorted(orphans)}"
    # one current template certificate for each op whose template the library's rules rely on
    rs = load_rules()
    used = {op for r in rs.rules for op in r.ops_used if rs.ops[op].torch and rs.ops[op].means}
    have = {p.name for p in (proofs / "templates").glob("*.json")}
    want = {certificates.template_certificate_path(rs.ops[op], rs.vocabulary).name for op in used}
    assert want <= have, sorted(want - have)
    assert all(certificates.template_certificate(rs.ops[op], rs.vocabulary) for op in used)
    known = {certificates.template_certificate_path(d, rs.vocabulary).name for d in rs.ops.values()
             if d.torch and d.means}
    assert not have - known, f"template certificates of ops that no longer exist: {sorted(have - known)}"


def test_axioms_flag(capsys):
    code, out, _ = run(["prove", "--axioms"], capsys)
    assert code == 0 and "softmax_rows" in out and "<consistency>" in out


def test_a_refutation_at_any_tier_exits_1_and_writes_nothing(capsys):
    # the parametric tier refutes (the bounded sizes miss it); a counterexample whose report divides
    # by zero is still a refutation
    code, out, _ = run(["prove", str(WRONG), "--match", "wrong.parametric_only", "--match", "wrong.division_in_report",
                        "--no-condition-check", "--json"], capsys)
    data = json.loads(out)
    assert code == 1
    got = {r["rule"]: (r["status"], r["tier"]) for r in data["results"]}
    assert got == {"wrong.parametric_only": ("refuted", "parametric"), "wrong.division_in_report": ("refuted", "test")}
    assert not list(WRONG.glob("proofs/*.json"))


def test_a_wrong_template_is_reported_at_the_op_with_a_replay(capsys):
    code, out, _ = run(["prove", str(WRONG), "--match", "wrong.template_scale_shift", "--no-condition-check"], capsys)
    assert code == 1
    assert "wrong_templates.rules:5:1: op 'scale_shift': torch template is wrong" in out
    assert "rule 'wrong.template_scale_shift' is wrong: op 'scale_shift'" in out
    diff = float(out.split("max |lhs - rhs| = ")[1].split()[0])
    assert diff > 0.5
    assert not list(WRONG.glob("proofs/**/*.json"))


OP = """
op shift(x: T[*B, n], bias: T[n]) -> T[*B, n]
  torch "{x} + {bias}"
  means out[*B, i] = x[*B, i] + bias[i]

rule u.shift_unused
  match y = shift(x: [*B, n], bias: [n])
  where unused y[*B, c]
  then  unused x[*B, c]
"""


def test_a_template_edit_makes_the_certificates_that_use_it_stale(rule_dir, capsys):
    d = rule_dir("u.rules", OP)
    code, out, _ = run(["prove", str(d), "--rules", str(d), "--json"], capsys)
    data = json.loads(out)
    assert code == 0, data
    assert [t["op"] for t in data["templates"]["checked"]] == ["shift"]
    tcerts = list((d / "proofs" / "templates").glob("shift.*.json"))
    assert len(tcerts) == 1 and json.loads(tcerts[0].read_text())["status"] == "proved"
    rs = load_rules(extra=[d])
    assert certificates.status(rs.rule("u.shift_unused"), rs) == "current"
    # the same function, written differently: the proof is not current any more
    (d / "u.rules").write_text(OP.replace('"{x} + {bias}"', '"{bias} + {x}"'))
    rs2 = load_rules(extra=[d])
    assert certificates.status(rs2.rule("u.shift_unused"), rs2) == "stale"
    assert certificates.template_certificate(rs2.ops["shift"]) is None
    code, out, _ = run(["prove", str(d), "--rules", str(d)], capsys)
    assert code == 0 and "torch templates: 1 agree with their means" in out
    assert len(list((d / "proofs" / "templates").glob("shift.*.json"))) == 1


def test_ops_with_a_template_and_no_means_are_listed(rule_dir, capsys):
    d = rule_dir("u.rules", GOOD + """
op twice(x: T[*B]) -> T[*B]
  torch "2 * {x}"
""")
    code, out, _ = run(["prove", str(d), "--rules", str(d), "--no-condition-check"], capsys)
    assert code == 0
    assert "1 ops have a template but no means, so it is not checked: twice" in out
    assert "torch templates: 1 agree with their means" in out  # linear's, which the rule uses


def test_a_template_that_cannot_be_compared_is_said_so(rule_dir, capsys):
    # the means uses a function with no real definition: the proof holds for any such function, the
    # template cannot be compared with it; the run says so instead of passing it silently
    d = rule_dir("u.rules", """
function leaky(x, s)

op leaky(x: T[*B], slope: float = 0.01) -> T[*B]
  means out[*I] = leaky(x[*I], slope)
  torch "F.leaky_relu({x}, {slope})"

rule u.leaky.drop_channel
  match y = leaky(x: [*B, n])
  then  drop(y, -1, c) = leaky(drop(x, -1, c))
""")
    code, out, _ = run(["prove", str(d), "--rules", str(d), "--no-condition-check"], capsys)
    assert code == 0
    assert "op 'leaky': torch template was not checked" in out
    assert "warning: " in out and "could not be compared with its means" in out
    assert "1 could not be compared (leaky)" in out


def test_a_prelude_helper_edit_makes_the_certificates_that_use_it_stale(monkeypatch):
    """A template that calls `P.attention` is certified through the helper's source too: editing the
    helper in prelude/pytorch.py (here: a stand-in text) makes the attention rules' certificates stale."""
    rs = load_rules()
    rule = rs.rule("channels.attention.zero_query_dim")
    assert certificates.status(rule, rs) == "current"
    real = certificates.prelude_sources()
    edited = dict(real, attention=real["attention"].replace("is_causal=causal", "is_causal=not causal"))
    monkeypatch.setattr(certificates, "prelude_sources", lambda: edited)
    assert certificates.status(rule, rs) == "stale"
    assert certificates.status(rs.rule("channels.linear.fold_const"), rs) == "current"  # F.linear: no helper
