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


def test_axioms_flag(capsys):
    code, out, _ = run(["prove", "--axioms"], capsys)
    assert code == 0 and "softmax_rows" in out and "<consistency>" in out
