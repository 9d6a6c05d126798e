"""Property: a mutated rule file is refused by the loader with the project's own located error, or it
loads and survives what uses it later (certificate checks, the prover's front, the rule compiler, and
type-checking and emitting the rule-case programs that use a changed op). Mutator and harness:
sr_ir.testing.rule_mutation; benchmarks/fuzz_rules.py runs the same on 10,000 mutants through the CLI too."""
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sr_ir.errors import ParseError, SrIrError, TypeCheckError
from sr_ir.lang.loader import load_rules
from sr_ir.resources import data_dir
from sr_ir.testing.rule_mutation import RuleFuzz, case_programs, mutate, rule_files

ROOT = Path(__file__).resolve().parents[2]
RULES = data_dir("rules")
OPS = [f for f in rule_files() if f.parent.name == "ops"]
OTHERS = [f for f in rule_files() if f.parent.name != "ops"]
# beside a mutant: the other op files and three files of minimization rules (rules a changed op reaches;
# benchmarks/fuzz_rules.py loads every file); a test stays fast by loading few rules per mutant
BASE = tuple(str(f.relative_to(RULES)) for f in rule_files()
             if f.parent.name == "ops" or f.name in ("linear.rules", "elementwise.rules", "conv.rules"))


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    return RuleFuzz(tmp_path_factory.mktemp("rulefuzz"), base=BASE,
                    programs=case_programs(ROOT / "tests" / "rulecases"), max_rules=4)


def _survives(fuzz: RuleFuzz, path: Path, rng: random.Random) -> None:
    text = mutate(fuzz.original(path), rng)
    outcome = fuzz.run(path, text)
    ok = ("accepted", "rejected_located", "accepted_slow")  # slow: past the deadline `sr-ir prove` gives a rule too
    assert outcome.kind in ok, f"{outcome.kind}: {outcome.detail}\n--- mutant:\n{text}"


def _fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# two tests (xdist runs them side by side); op-file mutants cost more (the rules beside them resolve again)
@_fuzz(400)
@given(path=st.sampled_from(OPS), rng=st.randoms(use_true_random=False))
def test_op_file_mutants_fail_cleanly_or_survive(fuzz, path, rng):
    _survives(fuzz, path, rng)


@_fuzz(600)
@given(path=st.sampled_from(OTHERS), rng=st.randoms(use_true_random=False))
def test_rule_file_mutants_fail_cleanly_or_survive(fuzz, path, rng):
    _survives(fuzz, path, rng)


# What the fuzz found: each loaded once and failed later (in the checker, the emitter or the prover).
FOUND = {
    "result dim no operand binds": ("op f(x: T[n]) -> T[m]\n", "the result uses 'm', which no operand"),
    "result dim only an optional operand binds":
        ("op f(x: T[*B], y: T[n]?) -> T[*B, n]\n", "which only an optional or variadic operand binds"),
    "result dtype no operand has": ("op f(x: T[*B]) -> U[*B]\n", "dtype U is not the dtype of a required operand"),
    "run of dims as one dim": ("op f(x: T[*B]) -> T[B]\n", "uses the run of dims 'B' as a number"),
    "list attribute in arithmetic": ("op f(x: T[n], k: ints) -> T[n]\n  where k > 1\n", "list attribute 'k'"),
    "unknown shape function": ("op f(x: T[n]) -> shape nope\n", "no shape function 'nope'"),
    "template with a stray brace": ("op f(x: T[n]) -> T[n]\n  torch \"torch.relu({x}})\"\n", "braces are balanced"),
    "means read by a run its target does not bind":
        ("op f(x: T[*B]) -> T[*B]\n  means out[*I] = x[*B]\n", "*B is not a run of indices of the target"),
    "means reading an unknown tensor":
        ("op f(x: T[*B, n]) -> T[*B, n]\n  means out[*I, i] = sum(j < dim(xx, 1), x[*I, j])\n", "unknown name 'xx'"),
    "range that is no range": ("op f(x: T[*B, n]) -> T[*B, n]\n  means out[*I, i] = sum(j - n, x[*I, j])\n",
                               "is a range `i < n`"),
    "drop of a value variable": ("rule t.r\n  match y = relu(x: [*B, n])\n  then drop(y, -1, c) = relu(drop(xx, -1, c))\n",
                                 "'xx' is not a tensor"),
    "value variable as an integer attribute":
        ("rule t.r\n  match y = cumsum(x: [*B, n], dim=d)\n  then drop(y, -1, c) = cumsum(drop(x, -1, c), k)\n",
         "computed from 'k', a value variable"),
    "list ordered": ("rule t.r\n  match y = permute(x, dims=p)\n  where p <= [0, 1]\n  then y[*B, c] == 0\n",
                     "orders `p`, a list"),
    "none inside a list": ("rule t.r\n  match y = permute(x, dims=p)\n  where p == [0, none]\n  then y[*B, c] == 0\n",
                           "a list holds numbers"),
    "fraction in an integer list": ("rule t.r\n  match y = permute(x, dims=p)\n  where p == [0, 1.5]\n"
                                    "  then y[*B, c] == 0\n", "p holds integers"),
    "width along a fraction": ("rule t.r\n  match y = concat(us...: [b, p], x: [b, n], dim=d)\n"
                               "  then y[:, width(us, -1.5) + c] == 0\n", "is an integer axis"),
    "result that is its own operand": ("rule t.r\n  match y = relu(u); u = mul(a, u: [])\n  then y[*B, c] == 0\n",
                                       "is the result of a node matched before it"),
    "operand produced by a node before it":
        ("rule t.r\n  match y = mul(h, t); h = mul(x, k: []); t = tanh(u); u = mul(a, h)\n  then y[*B, c] == 0\n",
         "'h', an operand of `mul`, is the result of a node matched before it"),
    "fraction as an integer attribute":
        ("rule t.r\n  match y = cumsum(x: [*B, n], dim=d)\n  then drop(y, -1, c) = cumsum(drop(x, -1, c), -1e-05)\n",
         "attribute dim of cumsum holds integers"),
    "fraction compared with an integer attribute":
        ("rule t.r\n  match y = cumsum(x: [*B, n], dim=d)\n  where d == -1.5\n  then y[*B, c] == 0\n",
         "d holds integers, `-1.5` is not one"),
    "two definitions of out": ("op f(x: T[*B]) -> T[*B]\n  means out[*I] = x[*I]; out[*I] = -x[*I]\n",
                               "'out' is defined twice"),
    "attribute named like a dim": ("rule t.r\n  match y = cumsum(x: [d, n], dim=d)\n  then y[:, c] == 0\n",
                                   "names the attribute dim of cumsum and also"),
    # 10,000-mutant run of 2026-12-02: a definition that reads itself recursed in the prover's evaluation
    "a definition that reads itself": ("op f(x: T[*B]) -> T[*B]\n  means out[*I] = out[*I]\n",
                                       "'out' reads 'out', which is itself"),
    "a definition that reads a later one": ("op f(x: T[*B]) -> T[*B]\n  means y[*I] = out[*I]; out[*I] = x[*I]\n",
                                            "'y' reads 'out', which is defined after it"),
    # ... and `false` in a shape list reached the exact algebra's reshape
    "a list given to min": ("op f(x: T[*B, w], pad: ints) -> T[*B, w]\n  where w + min([2], 0) >= 0\n"
                            "  means out[*I] = x[*I]\n", "min takes numbers, `[2]` is a list"),
    "a boolean in a list": ("rule t.r\n  match y = reshape(x: [*B], shape=s)\n  where s == [2, false]\n"
                            "  then y[*B] == 0\n", "a list holds numbers, not `false`"),
}


@pytest.mark.parametrize("name", list(FOUND))
def test_what_the_fuzz_found_is_refused_at_load(tmp_path, name):
    text, message = FOUND[name]
    d = tmp_path / "user"
    d.mkdir()
    (d / "found.rules").write_text(text, encoding="utf-8")
    with pytest.raises((ParseError, TypeCheckError)) as e:
        load_rules(extra=[d])
    assert message in e.value.message, e.value.message
    assert e.value.loc is not None and Path(e.value.loc.file).name == "found.rules" and e.value.loc.line >= 1


def test_every_bundled_and_example_rule_still_loads():
    rs = load_rules()
    assert len(rs.rules) >= 160 and len(rs.ops) >= 49
    for example in ("elu_gated_mlp", "scale_norm", "gqa_no_rope"):
        assert load_rules(extra=[ROOT / "examples" / example]).rules


def test_rejections_name_the_mutant_file(fuzz):
    """A refused mutant's error points into a rule file (the mutant's own, or one it breaks)."""
    path = next(f for f in OTHERS if f.name == "linear.rules")
    outcome = fuzz.run(path, fuzz.original(path).replace("then  y = linear(", "then  y = linear((", 1))
    assert outcome.kind == "rejected_located", outcome
    with pytest.raises(SrIrError):
        fuzz.load(path, "op broken(x: T[n]) -> T[m]\n")


# Mutants the loader rightly accepts (a side condition deleted, an attribute required absent) on which
# the prover's evaluation once raised a TypeError: the instances where they cannot be evaluated are now
# skipped as invalid, like any other.
SURVIVED = {
    "a slice's conditions deleted": ("minimize/layout.rules", "  where dd == -1, st == 1, c >= a, c < z, x[*B, c] == k\n", ""),
    "an attribute required absent": ("minimize/pooling.rules", "count_include_pad=cip, divisor_override=dov)",
                                     "count_include_pad=none, divisor_override=dov)"),
}


@pytest.mark.parametrize("name", list(SURVIVED))
def test_accepted_mutants_survive_the_prover(fuzz, name):
    rel, old, new = SURVIVED[name]
    path = RULES / rel
    text = fuzz.original(path)
    assert old in text
    outcome = fuzz.run(path, text.replace(old, new, 1))
    assert outcome.kind == "accepted", outcome
