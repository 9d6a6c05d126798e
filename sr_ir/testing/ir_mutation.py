"""Mutated IR texts, for fuzzing the parser, the checker and the emitter: seed programs, a seeded
mutator (text edits, and edits aimed at attribute values, dims, list lengths, dtypes and parameter
names), and the check that a program the checker accepts also emits and runs as declared.

    rng = random.Random(0)
    text = mutate(SEED_TEXTS["convnet"], rng)
    try:
        program = sr_ir.parse(text, "fuzz.sr")
    except (ParseError, TypeCheckError):
        ...                        # rejected: the error must carry file:line:col
    else:
        run_as_declared(program)   # accepted: must emit and run, outputs shaped as declared
"""
from __future__ import annotations

import math
import random
import re

import sympy
import torch

from ..errors import SrIrError
from ..ir.checker import infer_node
from ..ir.parser import parse
from ..ir.program import Program
from ..ir.sampling import sample_inputs
from ..ir.shape_functions import ShapeError
from ..ir.types import Dim, TensorType
from ..lang.evaluate import EvalError
from ..lang.loader import default_rules
from .text_edits import blind_edit

MLP_TEXT = """graph mlp(%x: f32[N, 8], %ids: i64[N, 3]) -> (f32[N, 4], f32[2*N, 2]) {
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

# a small conv net: every conv attribute written out, so that mutating one number changes one attribute
CONVNET_TEXT = """graph convnet(%x: f32[N, 3, 16, 16]) -> (f32[N, 10], f32[N, 8, 4, 4]) {
  param @conv1.weight: f32[8, 3, 3, 3]
  param @conv1.bias: f32[8]
  param @bn1.weight: f32[8]
  param @bn1.bias: f32[8]
  buffer @bn1.running_mean: f32[8]
  buffer @bn1.running_var: f32[8]
  param @conv2.weight: f32[8, 4, 3, 3]
  param @fc.weight: f32[10, 128]
  param @fc.bias: f32[10]
  %c1 = conv2d(%x, @conv1.weight, @conv1.bias, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1) : f32[N, 8, 16, 16]
  %b1 = batch_norm(%c1, @bn1.weight, @bn1.bias, @bn1.running_mean, @bn1.running_var, eps=1e-05) : f32[N, 8, 16, 16]
  %r1 = relu(%b1) : f32[N, 8, 16, 16]
  %c2 = conv2d(%r1, @conv2.weight, none, stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=2) : f32[N, 8, 16, 16]
  %s = add(%c2, %r1) : f32[N, 8, 16, 16]
  %p = max_pool2d(%s, kernel_size=[2, 2], stride=[2, 2], padding=[0, 0], dilation=[1, 1]) : f32[N, 8, 8, 8]
  %q = avg_pool2d(%p, kernel_size=[2, 2], stride=[2, 2], padding=[0, 0]) : f32[N, 8, 4, 4]
  %f = reshape(%q, shape=[N, 128]) : f32[N, 128]
  %y = linear(%f, @fc.weight, @fc.bias) : f32[N, 10]
  return %y, %q
}
"""

SEED_TEXTS: dict[str, str] = {"mlp": MLP_TEXT, "convnet": CONVNET_TEXT}

FRAGMENTS = ["%", "@", "(", ")", "[", "]", ",", ":", "=", "{", "}", "N", "0", "-1", "1e-5", "f32", "i64",
             "linear", "add", "none", "true", '"', "\n", " ", "*", "//", "%h", "@fc.weight", "return", "graph",
             "param", "buffer", "999999999999", "f16[", "#", "\\"]
# values an attribute or a dim is most likely to be wrong with
NUMBERS = ["0", "-1", "-2", "2", "3", "7", "1.5", "-1e-5", "1e308", "nan", "inf", "4611686018427387904",
           "9223372036854775808", "9" * 400]
DIMS = ["N // 0", "N % 0", "0", "N - N", "N*N", "N // 2", "(N + 1) // 2", "2*N", "M", "-N"]
LISTS = ["[]", "[0]", "[1]", "[2]", "[0, 0]", "[-1, -1]", "[1, 1, 1]", "[2, 2, 2]", "[N]", "[1, 0]"]
KWARGS = ["groups=0", "groups=3", "dilation=[0, 0]", "stride=[0, 0]", "stride=[1, 1, 1]", "padding=[-1, -1]",
          "ceil_mode=true", "kernel_size=[0, 0]", "keepdim=true", "dims=[5]", "eps=-1.0", "divisor_override=0",
          "count_include_pad=false", "approximate=\"none\""]
PARAM_NAMES = ["@forward", "@training", "@T_destination", "@_parameters", "@fc1", "@fc.weight.bias", "@a-b.c-1",
               '@"x y"', '@"fc.we ight"', "@fc..weight", "@.fc", "@fc.", "@0.weight", "@class.def",
               "@sr_ir_source", "@fc.forward", "@\"\"", '@"\\u00e9.w"']
DTYPES = ["f16", "bf16", "f64", "i64", "i32", "bool", "u8"]

_NUMBER = re.compile(r"(?<![A-Za-z0-9_.@%])-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.])")
_LIST = re.compile(r"(?<==)\[[^\[\]]*\]")
_DIM = re.compile(r"(?<=[\[,] )(?:N|\d+)(?=[,\]])|(?<=\[)(?:N|\d+)(?=[,\]])")
_PARAM = re.compile(r"@[A-Za-z0-9_.]+")
_DTYPE = re.compile(r"\b(?:f32|i64)(?=\[)")
_CALL_END = re.compile(r"\) :")


def _replace_match(text: str, pattern: re.Pattern[str], choices: list[str], rng: random.Random) -> str:
    found = list(pattern.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    return text[:m.start()] + rng.choice(choices) + text[m.end():]


def _rename_param(text: str, rng: random.Random) -> str:
    """Rename one parameter everywhere (declaration and uses agree, so the name itself is on trial),
    or only at one place."""
    names = sorted(set(_PARAM.findall(text)))
    if not names:
        return text
    old, new = rng.choice(names), rng.choice(PARAM_NAMES)
    if rng.random() < 0.7:
        return re.sub(re.escape(old) + r"(?![A-Za-z0-9_.])", lambda _: new, text)
    return _replace_match(text, re.compile(re.escape(old) + r"(?![A-Za-z0-9_.])"), [new], rng)


def _add_kwarg(text: str, rng: random.Random) -> str:
    return _replace_match(text, _CALL_END, [f", {rng.choice(KWARGS)}) :"], rng)


def retyped(text: str) -> str:
    """`text` with the declared types of its nodes and results replaced by the ones the checker
    infers, up to the first node it cannot type: a mutated attribute then yields a program whose
    declarations agree, on which the checks beyond types (and the emitter) are on trial. Text that
    does not parse is returned as it is."""
    try:
        p = parse(text, "<mutant>", check=False)
    except SrIrError:
        return text
    ops = default_rules().ops
    env = dict(p.inputs)
    for node in p.nodes:
        if node.op not in ops:
            break
        try:
            node.type = infer_node(ops[node.op], node, env, p.params)
        except (ShapeError, EvalError):
            break
        env[node.name] = node.type
    if len(p.outputs) == len(p.output_types) and all(o in env for o in p.outputs):
        p.output_types = [env[o] for o in p.outputs]
    return p.to_text()


def mutate(text: str, rng: random.Random, edits: tuple[int, int] = (1, 3), retype: float = 0.5) -> str:
    """`text` after a few random edits (how many: between `edits`), each a blind text edit or one
    aimed at an attribute value, a list's length, a dim, a dtype, a parameter name or an attribute;
    then, with probability `retype`, with its declared types made to agree (`retyped`)."""
    aimed = [
        lambda t: _replace_match(t, _NUMBER, NUMBERS, rng),
        lambda t: _replace_match(t, _LIST, LISTS, rng),
        lambda t: _replace_match(t, _DIM, DIMS, rng),
        lambda t: _replace_match(t, _DTYPE, DTYPES, rng),
        lambda t: _rename_param(t, rng),
        lambda t: _add_kwarg(t, rng),
    ]
    for _ in range(rng.randint(*edits)):
        text = blind_edit(text, rng, FRAGMENTS) if rng.random() < 0.4 else rng.choice(aimed)(text)
    return retyped(text) if rng.random() < retype else text


def _concrete(shape: tuple[Dim, ...], batch: int) -> list[int]:
    """Symbolic dims at `batch` (the value sample_inputs gives every symbol)."""
    return [d if isinstance(d, int) else int(sympy.sympify(d).subs({s: batch for s in d.free_symbols}))
            for d in shape]


def random_weights(program: Program, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tensor of the declared shape and dtype for every parameter and buffer (integers: 0 or 1)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name, t in program.params.items():
        shape, dt = _concrete(t.shape, 2), t.torch_dtype
        if dt.is_floating_point:
            out[name] = torch.randn(shape, generator=g).to(dt)
        elif dt == torch.bool:
            out[name] = torch.rand(shape, generator=g) < 0.5
        else:
            out[name] = torch.randint(0, 2, shape, generator=g, dtype=dt)
    return out


def largest_tensor_bytes(program: Program, batch: int = 2) -> int:
    """Bytes of the largest input, parameter or value of `program` with every symbol at `batch`."""
    types = [t for _, t in program.inputs] + list(program.params.values()) + [n.type for n in program.nodes]
    return max((math.prod(_concrete(t.shape, batch)) * t.torch_dtype.itemsize for t in types), default=0)


def run_as_declared(program: Program, batch: int = 2, max_bytes: int = 2**28) -> bool:
    """Emit `program` with random weights and run it on sampled inputs; raise AssertionError when an
    output's shape or dtype is not the declared one (any other failure propagates as it is). A
    program with a tensor of more than `max_bytes` (a valid one: a size may be as large as 2**62) is
    not run: returns False."""
    from ..backend import emit

    if largest_tensor_bytes(program, batch) > max_bytes:
        return False
    p = program.copy(weights=False)
    p.weights = random_weights(p)
    module = emit(p)
    with torch.no_grad():
        out = module(*sample_inputs(p, batch=batch))
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(p.output_types), f"{len(outs)} outputs, {len(p.output_types)} declared"
    for i, (o, t) in enumerate(zip(outs, p.output_types)):
        want = TensorType(t.dtype, tuple(_concrete(t.shape, batch)))
        assert TensorType.of(o) == want, f"output {i} is {TensorType.of(o)}, declared {t} (= {want})"
    return True


__all__ = ["CONVNET_TEXT", "MLP_TEXT", "SEED_TEXTS", "largest_tensor_bytes", "mutate", "random_weights", "retyped", "run_as_declared"]
