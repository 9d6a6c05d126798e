"""The `module "..." holds ...` clause of op declarations: parsed into OpDecl.module, checked at load
like a `torch` template (one constructor call of an nn / sr_ir.nn layer over the op's fields), and not
part of any proof's hash."""
import pytest

from sr_ir.errors import ParseError
from sr_ir.lang.loader import default_rules, parse_rule_text
from sr_ir.prover.certificates import op_semantics_text

OP = """op lin(x: T[*B, n], weight: T[m, n], bias: T[m]?, scale: float = 1.0) -> T[*B, m]
  torch "F.linear({{x}}, {{weight}}, {{bias}})"
  module {clause}
"""


def _decl(clause: str):
    return parse_rule_text(OP.format(clause=clause), "t.rules")[0]


def test_the_clause_is_read_with_its_held_operands():
    d = _decl('"nn.Linear({n}, {m}, bias={has_bias}, dtype={dtype})" holds weight, bias')
    assert d.module.text == "nn.Linear({n}, {m}, bias={has_bias}, dtype={dtype})"
    assert d.module.holds == ("weight", "bias")
    assert (d.module.loc.file, d.module.loc.line, d.module.loc.col) == ("t.rules", 3, 10)


def test_the_bundled_layers():
    ops = default_rules().ops
    layers = {n: d.module.text.split("(")[0] for n, d in ops.items() if d.module is not None}
    assert layers == {"linear": "nn.Linear", "conv1d": "nn.Conv1d", "conv2d": "nn.Conv2d",
                      "batch_norm": "SN.FrozenBatchNorm", "layer_norm": "nn.LayerNorm",
                      "embedding": "nn.Embedding", "compensated_layer_norm": "SN.FixedCompensatedLayerNorm",
                      "compensated_rms_norm": "SN.FixedCompensatedRMSNorm"}


@pytest.mark.parametrize("clause, message", [
    ('"nn.Linear({n}, {k})" holds weight', "uses {k}, which is not an attribute, a dim"),
    ('"nn.Linear({n}, {m})" holds w', "holds 'w', which is not a tensor operand"),
    ('"nn.Linear({n}, {m})" holds weight, weight', "holds 'weight' twice"),
    ('"nn.Linear({n}, {m})" holds x, weight, bias', "holds every operand"),
    ('"F.linear({n}, {m})" holds weight', "module template may not name 'F'"),
    ('"torch.zeros({n}, {m})" holds weight', "one constructor call, nn.Layer(...) or SN.Layer(...)"),
    ('"nn.Linear({n}, {m}).cuda()" holds weight', "one constructor call"),
    ('"SN.NoSuchNorm({n})" holds weight', "sr_ir.nn has no layer of that name"),
    ('"nn.Linear({n}, __import__({m}))" holds weight', "module template may not call '__import__'"),
    ('"nn.Linear({n}, {m}).load({m})" holds weight', "module template may not use 'load'"),
    ('"nn.Linear({n}, {m}" holds weight', "module template is not one Python expression"),
])
def test_a_bad_clause_is_a_parse_error_at_its_place(clause, message):
    with pytest.raises(ParseError) as e:
        _decl(clause)
    assert message in str(e.value) and "t.rules:3:" in str(e.value)


def test_two_module_clauses():
    text = OP.format(clause='"nn.Linear({n}, {m})" holds weight') + '  module "nn.Linear({n}, {m})" holds weight\n'
    with pytest.raises(ParseError, match="two module clauses"):
        parse_rule_text(text, "t.rules")


def test_the_clause_is_not_in_the_proved_semantics():
    a = _decl('"nn.Linear({n}, {m}, bias={has_bias})" holds weight, bias')
    b = _decl('"nn.Linear({n}, {m}, bias=True, dtype={dtype})" holds weight')
    assert op_semantics_text(a) == op_semantics_text(b)


def test_an_attribute_named_like_a_clause_field_is_refused():
    text = ('op c(x: T[*B], weight: T[n]?, dtype: str) -> T[*B]\n  torch "{x}"\n'
            '  module "nn.LayerNorm({n}, dtype={dtype})" holds weight\n')
    with pytest.raises(ParseError, match=r"field \{dtype\} would mean two things"):
        parse_rule_text(text, "t.rules")
