"""Rules drive the engine: an op declared only in a user rule directory minimizes once its rules are
proved; a rule without a current certificate is never applied."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr_ir.errors import SrIrError
from sr_ir.lang.loader import load_rules
from sr_ir.minimization import UncertifiedRuleError, minimize

USER_RULES = """
function leaky(x, slope)
  means max(x, 0) + slope * min(x, 0)
  torch "torch.where({x} > 0, {x}, {slope} * {x})"

op leaky(x: T[*B], slope: float = 0.01) -> T[*B]
  aten aten.leaky_relu.default(x, slope)
  means out[*I] = leaky(x[*I], slope)
  torch "F.leaky_relu({x}, {slope})"

rule user.leaky.const
  match y = leaky(x: [*B, n], slope=s)
  where x[*B, c] == k
  then  y[*B, c] == leaky(k, s)

rule user.leaky.drop_channel
  match y = leaky(x: [*B, n])
  then  drop(y, -1, c) = leaky(drop(x, -1, c))
"""


class LeakyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(9, 12)
        self.fc2 = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc2(F.leaky_relu(self.fc1(x), 0.1))


def _model() -> LeakyMLP:
    torch.manual_seed(0)
    m = LeakyMLP().double()
    with torch.no_grad():
        m.fc1.weight[:3] = 0  # constants leaky(b) (negative biases give 0.1 * b, not 0)
        m.fc1.bias[:3] = torch.tensor([-1.0, 0.5, 2.0])
        m.fc2.weight[:, 10] = 0
    return m


def _user_dir(tmp_path: Path, prove: bool, text: str = USER_RULES) -> Path:
    d = tmp_path / "myrules"
    d.mkdir()
    (d / "leaky.rules").write_text(text)
    if prove:  # what `sr-ir prove myrules` does: prove, then write DIR/proofs/<rule>.<hash>.json
        from sr_ir.prover.certificates import write
        from sr_ir.prover.tiers import prove_rule

        rs = load_rules(extra=[d])
        for rule in rs.rules:
            if rule.name.startswith("user."):
                res = prove_rule(rule, rs.ops)
                assert res.status == "proved", res.message
                write(rule, rs.ops, res.to_json())
    return d


def test_a_user_declared_op_minimizes_with_its_proved_rule(tmp_path):
    x = torch.randn(5, 9, dtype=torch.float64)
    with pytest.raises(SrIrError):  # not declared in the bundled rules: lowering names the op
        minimize(_model(), (x,))
    d = _user_dir(tmp_path, prove=True)
    res = minimize(_model(), (x,), rules=d)
    assert dict(res.module.named_parameters())["fc2.weight"].shape == (4, 8)
    assert "user.leaky.drop_channel" in res.report.rules_used
    assert res.report.verification["float64"]["max_rel"] <= 1e-12


def test_a_rule_without_certificate_is_not_applied(tmp_path):
    x = torch.randn(5, 9, dtype=torch.float64)
    d = _user_dir(tmp_path, prove=False)
    res = minimize(_model(), (x,), rules=d)
    assert dict(res.module.named_parameters())["fc2.weight"].shape == (4, 12)  # the leaky units stay
    assert "user.leaky.drop_channel" in res.report.refused_rules
    assert "no certificate" in res.report.refused_rules["user.leaky.drop_channel"]
    with pytest.raises(UncertifiedRuleError, match=r"user\.leaky\.(const|drop_channel)"):
        minimize(_model(), (x,), rules=d, strict=True)


def test_a_rule_proved_for_one_rank_is_not_applied_at_another(tmp_path):
    # proved for 3-d [b, n, t] inputs with the channel on axis 1; the model's leaky sees 2-d rows
    d = _user_dir(tmp_path, prove=True, text=USER_RULES.replace(
        "match y = leaky(x: [*B, n])\n  then  drop(y, -1, c) = leaky(drop(x, -1, c))",
        "match y = leaky(x: [b, n, t])\n  then  drop(y, 1, c) = leaky(drop(x, 1, c))"))
    res = minimize(_model(), (torch.randn(5, 9, dtype=torch.float64),), rules=d)
    assert dict(res.module.named_parameters())["fc2.weight"].shape == (4, 12)  # the leaky units stay
    assert "user.leaky.drop_channel" not in res.report.rules_used


def test_batch_norm_channels_drop_at_any_rank():
    # BatchNorm1d on the network input cannot fold into a producer: its channel rule must hold for 2-d
    torch.manual_seed(0)
    m = nn.Sequential(nn.BatchNorm1d(6), nn.Linear(6, 3)).double().eval()
    with torch.no_grad():
        m[0].running_mean.uniform_(-1, 1)
        m[0].running_var.uniform_(0.5, 2)
        m[1].weight[:, [1, 4]] = 0
    res = minimize(m, (torch.randn(5, 6, dtype=torch.float64),))
    assert dict(res.module.named_parameters())["1.weight"].shape == (3, 4)
    assert "channels.batch_norm.drop_channel" in res.report.rules_used
    assert res.report.verification["float64"]["max_rel"] <= 1e-12


def test_a_stale_certificate_is_refused(tmp_path):
    x = torch.randn(5, 9, dtype=torch.float64)
    d = _user_dir(tmp_path, prove=True)
    # change the rule after proving it: its certificate no longer matches
    (d / "leaky.rules").write_text(USER_RULES.replace("match y = leaky(x: [*B, n])", "match y = leaky(x: [*B, m])")
                                   .replace("[*B, n]", "[*B, m]"))
    with pytest.raises(UncertifiedRuleError, match="stale"):
        minimize(_model(), (x,), rules=d, strict=True)


def test_what_a_rule_does_is_read_from_its_own_tree():
    """The engine sorts rules by their conclusion, and reads each right-hand-side argument by its form:
    the matched operand, a drop, the operand plus a term (these compose over many channels), or any other
    expression (one channel at a time, with a follow-up rule for the rest)."""
    from sr_ir.rewrite.rulebook import RuleBook

    rs = load_rules()
    book = RuleBook(rs, certify=lambda rule, ruleset: None)
    compiled = {cr.name: cr for kind in ("fact", "rewrite", "substitution") for cr in book.kinds(kind)}
    assert compiled["channels.linear.dead_row"].kind == "fact"
    assert compiled["channels.batch_norm.fold_conv2d"].kind == "substitution"
    fold = compiled["channels.linear.fold_const"]
    assert fold.kind == "rewrite" and fold.target is None and fold.composable
    assert [(a.param, a.kind) for a in fold.args] == [("x", "drop"), ("weight", "drop"), ("bias", "acc")]
    drop = compiled["channels.conv2d.drop_depthwise"]
    assert drop.target.tensor == "y" and ("groups", "acc") in [(a.param, a.kind) for a in drop.args]
    comp = compiled["layer_norm.compensate"]
    assert not comp.composable and book.follow_up(comp).name == "compensated_layer_norm.compose"
    nobias = compiled["channels.linear.fold_const_nobias"]
    assert not nobias.composable and book.follow_up(nobias).name == "channels.linear.fold_const"


def test_a_rule_the_engine_cannot_run_is_reported_not_silently_kept(tmp_path):
    # a backward fact proves fine, but the engine finds unread channels itself: the author is told
    text = USER_RULES + """
rule user.leaky.unused
  match y = leaky(x: [*B, n])
  where unused y[*B, c]
  then  unused x[*B, c]
"""
    d = _user_dir(tmp_path, prove=True, text=text)
    res = minimize(_model(), (torch.randn(5, 9, dtype=torch.float64),), rules=d)
    why = res.report.refused_rules["user.leaky.unused"]
    assert why.startswith("not runnable:") and "unused" in why
    assert "user.leaky.drop_channel" in res.report.rules_used  # the others still run
