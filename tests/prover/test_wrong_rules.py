"""Every wrong rule kept as a fixture is refuted with a real counterexample whose float64 replay
through the emitted PyTorch code shows a nonzero difference (or, for contradictory conditions, is
reported vacuous); none is proved. Each hole the prover once had has its fixture here, and the tests
below check that the fixture is caught the way that closes the hole."""
import math
from fractions import Fraction
from pathlib import Path

import pytest

from sr_ir.lang.loader import load_rules
from sr_ir.prover.tiers import prove_rule

WRONG = Path(__file__).resolve().parent / "wrong_rules"
RS = load_rules(extra=[WRONG])
NAMES = [r.name for r in RS.rules if r.name.startswith("wrong.")]
VACUOUS = {"wrong.contradictory_values"}
RESULTS: dict = {}


def result(name: str):
    if name not in RESULTS:
        RESULTS[name] = prove_rule(RS.rule(name), RS.ops)
    return RESULTS[name]


def test_the_design_traps_and_every_soundness_hole_have_a_fixture():
    assert {"wrong.padded_conv_fold", "wrong.layer_norm_kept_only", "wrong.dead_neuron_no_activation",
            "wrong.drop_zero_row_keep_bias", "wrong.attention_value_dim_masked",
            # holes: a refuted parametric tier, swapped float attributes, a one-sided padding
            # condition, a rule wrong only at rank 3 under *B, contradictory value conditions, a
            # failure while reporting, wrong templates
            "wrong.parametric_only", "wrong.swapped_float_attributes", "wrong.one_sided_padding",
            "wrong.rank3_batch_axis", "wrong.contradictory_values", "wrong.division_in_report",
            "wrong.template_scale_shift", "wrong.template_conv2d_hw",
            "wrong.template_compensated_ln_swapped"} <= set(NAMES)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in VACUOUS])
def test_refuted_with_a_real_counterexample(name):
    res = result(name)
    assert res.status == "refuted", (res.status, res.message)
    cex = res.counterexample
    assert cex["real"] and "at" in cex and cex["lhs"] != cex["rhs"]
    rp = cex["replay"]
    assert "error" not in rp, rp
    d = rp["max_abs_diff"]
    assert math.isnan(d) or d > 1e-6, d


def test_contradictory_value_conditions_are_vacuous():
    res = result("wrong.contradictory_values")
    assert res.status == "vacuous" and res.tier is None, (res.status, res.message)


def test_a_parametric_counterexample_is_a_refutation_confirmed_at_its_sizes():
    # right at the channel dim's bounded sizes (1, 3, 4): only the parametric tier sees it, and its
    # counterexample is rebuilt at the small size it names and replayed
    res = result("wrong.parametric_only")
    assert (res.status, res.tier) == ("refuted", "parametric"), res.message
    n = int(res.counterexample["instance"].split("n=")[1].split(",")[0])
    assert n not in (1, 3, 4)


def test_swapped_float_attributes_meet_distinct_values():
    res = result("wrong.swapped_float_attributes")
    assert res.status == "refuted" and res.tier == "test"
    label = res.counterexample["instance"]
    s1, s2 = (Fraction(label.split(f"{k}=")[1].split(",")[0]) for k in ("s1", "s2"))
    assert s1 != s2


def test_a_one_sided_padding_condition_meets_asymmetric_padding():
    res = result("wrong.one_sided_padding")
    assert res.status == "refuted"
    pad = res.counterexample["instance"].split("p=")[1].split("]")[0]
    first, second = (int(x) for x in pad.strip("[").split(","))
    assert first == 0 and second != 0  # the condition holds, the padding is one-sided


def test_a_rule_wrong_only_at_rank_3_is_refuted_at_rank_3():
    res = result("wrong.rank3_batch_axis")
    assert res.status == "refuted"
    axes = res.counterexample["instance"].split("B=[")[1].split("]")[0].split(",")
    assert len(axes) == 2  # *B of two axes: x is [b, t, n]


def test_a_failure_while_reporting_keeps_the_refutation():
    # the inner division is undefined away from the counterexample's position
    res = result("wrong.division_in_report")
    assert res.status == "refuted"
    z = res.counterexample["intermediates"]["z"]
    assert any("undefined" in str(v) for row in z for v in row)


@pytest.mark.parametrize("name,op", [("wrong.template_scale_shift", "scale_shift"),
                                     ("wrong.template_conv2d_hw", "conv2d_hw"),
                                     ("wrong.template_compensated_ln_swapped", "compensated_ln_swapped")])
def test_a_wrong_template_refutes_the_rules_that_use_it(name, op):
    res = result(name)
    assert (res.status, res.tier) == ("refuted", "template"), res.message
    loc = RS.ops[op].loc
    assert f"op '{op}' ({loc.file}:{loc.line}:{loc.col})" in res.message
    assert res.counterexample["replay"]["max_abs_diff"] > 1e-6
