"""reshape and concat semantics: flatten blocks and concat offsets prove at the parametric tier, and
the structures the parametric tier uses (merged and joined extents) do not prove what is false."""

import pytest

from sr_ir.lang.loader import default_rules, load_rules
from sr_ir.prover.tiers import prove_rule

RS = default_rules()


@pytest.mark.parametrize("name", ["channels.reshape.flatten", "channels.reshape.flatten1d",
                                  "channels.reshape.unflatten", "channels.concat.drop_channel",
                                  "channels.concat.drop_channel_maps", "channels.concat.drop_channel_last"])
def test_flatten_and_concat_rules_prove_parametric(name):
    res = prove_rule(RS.rule(name), RS.ops)
    assert res.status == "proved" and res.tier == "parametric", (res.status, res.tier, res.message)
    if name.startswith("channels.concat"):  # every run length the bounded tier used
        assert all(f"len(us...)={k}" in res.message for k in (0, 1, 2)), res.message


WRONG = """
rule w.flatten_control
  match y = reshape(x: [b, n, h, w], shape=s)
  where s == [b, n * h * w]
  then  drop(y, 1, c, h * w) = reshape(drop(x, 1, c), [b, (n - 1) * h * w])

rule w.concat_swapped
  match y = concat(us...: [b, p], x: [b, n], vs...: [b, q], dim=d)
  where d == 1
  then  drop(y, 1, width(us, 1) + c) = concat(vs..., drop(x, 1, c), us..., d)
"""


def test_parametric_tier_alone_does_not_prove_a_swapped_concat(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    (d / "w.rules").write_text(WRONG)
    rs = load_rules(extra=[d])
    res = prove_rule(rs.rule("w.concat_swapped"), rs.ops)
    assert res.status == "refuted" and res.counterexample["real"]
    # the flatten text above is the correct rule under another name: it proves (a control)
    assert prove_rule(rs.rule("w.flatten_control"), rs.ops).tier == "parametric"
