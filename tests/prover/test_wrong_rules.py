"""Every wrong rule kept as a fixture is refuted with a real counterexample whose float64 replay
through the emitted PyTorch code shows a nonzero difference."""
import math
from pathlib import Path

import pytest

from sr_ir.lang.loader import load_rules
from sr_ir.prover.tiers import prove_rule

WRONG = Path(__file__).resolve().parent / "wrong_rules"
RS = load_rules(extra=[WRONG])
NAMES = [r.name for r in RS.rules if r.name.startswith("wrong.")]


def test_at_least_the_five_design_traps_are_kept():
    assert {"wrong.padded_conv_fold", "wrong.layer_norm_kept_only", "wrong.dead_neuron_no_activation",
            "wrong.drop_zero_row_keep_bias", "wrong.attention_value_dim_masked"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_refuted_with_a_real_counterexample(name):
    res = prove_rule(RS.rule(name), RS.ops)
    assert res.status == "refuted", (res.status, res.message)
    cex = res.counterexample
    assert cex["real"] and "at" in cex and cex["lhs"] != cex["rhs"]
    rp = cex["replay"]
    assert "error" not in rp, rp
    d = rp["max_abs_diff"]
    assert math.isnan(d) or d > 1e-6, d
