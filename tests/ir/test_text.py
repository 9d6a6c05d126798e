"""IR text: exact round trip, and errors that carry file:line:col."""
import pytest
import sympy

import sr_ir
from sr_ir.errors import ParseError, TypeCheckError
from sr_ir.testing.ir_mutation import CONVNET_TEXT, MLP_TEXT

TEXT = MLP_TEXT


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
        # numbers no size or axis can be, and a dim divided by zero, at the token / the expression
        ("[10, 4]", "[99999999999999999999, 4]", 4, 22, "integer 99999999999999999999 is out of range"),
        ("mul(%g, 0.5)", "mul(%g, 4611686018427387905)", 7, 16, "out of range (at most 2**62)"),
        ("shape=[2*N, 2]", "shape=[2*N // 0, 2]", 11, 27, "division by zero in a dim"),
        ("shape=[2*N, 2]", "shape=[N % (N - N), 2]", 11, 27, "division by zero in a dim"),
        # sizes: positive, and a weight's concrete
        ("%x: f32[N, 8]", "%x: f32[N, 0]", 1, 1, "input %x: f32[N, 0]: size 0 is not positive"),
        ("@fc.bias: f32[4]", "@fc.bias: f32[N]", 3, 3, "symbolic shape f32[N]"),
        # parameter names a module tree cannot hold, at the declaration
        ("@fc.bias: f32[4]", "@forward: f32[4]", 3, 3, "'forward' is an attribute of every nn.Module"),
        ("@fc.bias: f32[4]", "@fc.training: f32[4]", 3, 3, "'training' is an attribute"),
        ("@fc.bias: f32[4]", "@fc..bias: f32[4]", 3, 3, "no empty component"),
        ("@table: f32[10, 4]", "@fc.weight.t: f32[10, 4]", 4, 3, "@fc.weight is a tensor, it cannot hold @fc.weight.t"),
        ("@fc.bias: f32[4]", '@"fc.\\q": f32[4]', 3, 9, "bad quoted parameter name"),
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


@pytest.mark.parametrize(
    "old,new,line,msg",
    [
        ("stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1", "stride=[0, 1], padding=[1, 1], dilation=[1, 1], groups=1",
         11, "conv2d: condition violated: stride[0] >= 1 (stride = [0, 1])"),
        ("stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1", "stride=[1, 1, 1], padding=[1, 1], dilation=[1, 1], groups=1",
         11, "len(stride) == 2"),
        ("padding=[1, 1], dilation=[1, 1], groups=2", "padding=[-1, 1], dilation=[1, 1], groups=2", 14, "padding[0] >= 0"),
        ("dilation=[1, 1], groups=2", "dilation=[0, 0], groups=2", 14, "dilation[0] >= 1 (dilation = [0, 0])"),
        ("groups=2", "groups=0", 14, "groups >= 1 (groups = 0)"),
        ("eps=1e-05", "eps=-1e-05", 12, "batch_norm: condition violated: eps >= 0 (eps = -1e-05)"),
        ("max_pool2d(%s, kernel_size=[2, 2]", "max_pool2d(%s, kernel_size=[0, 2]", 16, "kernel_size[0] >= 1"),
        ("max_pool2d(%s, kernel_size=[2, 2], stride=[2, 2]", "max_pool2d(%s, kernel_size=[2, 2], stride=[2, 0]", 16,
         "stride[(len(stride) - 1)] >= 1"),
        ("padding=[0, 0])", "padding=[0, 0], divisor_override=0)", 17, "divisor_override != 0"),
        ("%f = reshape", "%m = mean(%q, dims=[], keepdim=true) : f32[N, 8, 4, 4]\n  %f = reshape", 18, "len(dims) >= 1"),
    ],
)
def test_op_preconditions_are_type_errors_at_the_node(old, new, line, msg):
    """What torch would refuse when the module runs (a stride of 0, a 3-element stride of a conv2d)
    the op declarations' `where` clauses refuse when the text is read."""
    assert old in CONVNET_TEXT
    with pytest.raises(TypeCheckError) as e:
        sr_ir.parse(CONVNET_TEXT.replace(old, new, 1), "net.sr")
    assert (e.value.loc.line, e.value.loc.col) == (line, 3), str(e.value)
    assert msg in str(e.value)


def test_a_symbol_in_an_attribute_must_be_an_input_size():
    text = "graph g(%x: f32[2*N]) -> (f32[2*N]) {\n  %r = reshape(%x, shape=[2*N]) : f32[2*N]\n  return %r\n}\n"
    with pytest.raises(TypeCheckError, match=r"g.sr:2:3: attribute 'shape' reads the symbol N, which is not the size of an input axis"):
        sr_ir.parse(text, "g.sr")


def test_module_path_names_round_trip_plain_with_dashes_and_quoted_otherwise():
    """torch module paths may hold any character but `.` in a component (RegNet's `block1-0`)."""
    names = ["trunk.block1-0.weight", "stage 2.0.w", 'q"uote.\\x', "\u00e9t\u00e9.w"]
    decls = "".join(f"  param {sr_ir.ParamRef(n)}: f32[4]\n" for n in names)
    uses = "".join(f"  %a{i} = add(%x, {sr_ir.ParamRef(n)}) : f32[N, 4]\n" for i, n in enumerate(names))
    text = f"graph g(%x: f32[N, 4]) -> (f32[N, 4]) {{\n{decls}{uses}  return %a3\n}}\n"
    p = sr_ir.parse(text)
    assert list(p.params) == names
    assert p.to_text() == text
    assert "@trunk.block1-0.weight:" in text and '@"stage 2.0.w":' in text
