"""IR text: exact round trip, and errors that carry file:line:col."""
import pytest
import sympy

import sr_ir
from sr_ir.errors import ParseError, TypeCheckError

TEXT = """graph mlp(%x: f32[N, 8], %ids: i64[N, 3]) -> (f32[N, 4], f32[2*N, 2]) {
  param @fc.weight: f32[4, 8]
  param @fc.bias: f32[4]
  buffer @table: f32[10, 4]
  %h = linear(%x, @fc.weight, @fc.bias) : f32[N, 4]
  %g = gelu(%h, approximate="tanh") : f32[N, 4]
  %s = mul(%g, 0.5) : f32[N, 4]
  %e = embedding(@table, %ids) : f32[N, 3, 4]
  %m = mean(%e, dims=[1], keepdim=false) : f32[N, 4]
  %a = add(%s, %m) : f32[N, 4]
  %r = reshape(%a, shape=[2*N, 2]) : f32[2*N, 2]
  return %a, %r
}
"""


def test_round_trip_is_exact():
    p = sr_ir.parse(TEXT)
    assert p.to_text() == TEXT
    assert sr_ir.parse(p.to_text()).to_text() == TEXT
    assert p.buffers == {"table"}
    n = sympy.Symbol("N", integer=True, positive=True)
    assert p.output_types[1].shape == (2 * n, 2)


def test_floats_round_trip_bit_exact():
    for eps in (1e-05, 1e-6, 0.1 + 0.2, 3.0, 1.0000000000000002e-300):
        text = TEXT.replace("%s = mul(%g, 0.5)", f"%s = mul(%g, {eps!r})")
        assert sr_ir.parse(text).nodes[2].operands[1] == eps


@pytest.mark.parametrize(
    "old,new,line,col,msg",
    [
        ("%h = linear", "%h = = linear", 5, 8, "unexpected"),
        ("%g = gelu(%h,", "%g = gelu(%nope,", 6, 3, "undefined value %nope"),
        (": f32[N, 4]\n  %g", ": f32[N, 5]\n  %g", 5, 3, "declared f32[N, 5]"),
        ("@fc.bias) :", "@fc.nobias) :", 5, 3, "undeclared parameter @fc.nobias"),
        ("gelu(%h, approximate=\"tanh\")", "gelu(%h, approximate=\"cubic\")", 6, 3, "condition violated"),
        ("%s = mul", "%h = mul", 7, 3, "defined twice"),
        ("%e = embedding", "%e = frobnicate", 8, 3, "unknown op 'frobnicate'"),
    ],
)
def test_errors_have_locations(old, new, line, col, msg):
    bad = TEXT.replace(old, new, 1)
    with pytest.raises((ParseError, TypeCheckError)) as e:
        sr_ir.parse(bad, "model.sr")
    assert e.value.loc is not None
    assert (e.value.loc.file, e.value.loc.line, e.value.loc.col) == ("model.sr", line, col), str(e.value)
    assert msg in str(e.value)
    assert str(e.value).startswith(f"model.sr:{line}:{col}: ")
