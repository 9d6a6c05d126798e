"""The function vocabulary as the loader reads it: `function` and `axiom` items, names resolved with
file:line:col errors, and `torch_function`, the one way a function is computed on tensors."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sr_ir.errors import SrIrError
from sr_ir.lang import ast as A
from sr_ir.lang.functions import Bound, Homomorphism, Pin, torch_function
from sr_ir.lang.loader import load_rules
from sr_ir.resources import data_dir

BAD = Path(__file__).resolve().parents[1] / "prover" / "bad_rules"
LIB = load_rules()


@pytest.fixture
def rule_dir(tmp_path):
    def write(name: str, text: str) -> Path:
        d = tmp_path / "user_rules"
        d.mkdir(exist_ok=True)
        (d / name).write_text(text)
        return d

    return write


def _load(rule_dir, text):
    return load_rules([data_dir("rules") / "ops"], extra=[rule_dir("t.rules", text)])


def test_the_bundled_vocabulary_declares_what_rules_and_semantics_call():
    fns = LIB.functions
    assert {"relu", "relu6", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "exp", "erf", "rsqrt", "sqrt",
            "abs", "hardswish", "hardsigmoid", "mish", "softplus"} <= set(fns)
    assert all(f.torch for f in fns.values())
    assert fns["relu"].means == A.Call("max", (A.Name("x"), A.Num(0)))
    assert fns["exp"].means is None  # a primitive: known through its torch spelling and its axioms
    assert {"relu_zero", "gelu_zero", "silu_zero", "tanh_zero", "sigmoid_half", "hardswish_zero", "mish_zero",
            "exp_zero", "exp_add", "exp_pos", "softmax_rows", "softmax_shift"} <= set(LIB.axioms)
    ax = LIB.axioms
    assert ax["gelu_zero"].form == Pin("gelu", (0,), 0) and ax["gelu_zero"].functions == ("gelu",)
    assert ax["sigmoid_half"].form.value == pytest.approx(0.5)
    assert ax["exp_add"].form == Homomorphism("exp")
    assert ax["exp_pos"].form == Bound("exp", 1, ">", 0)
    assert ax["softmax_rows"].builtin and ax["softmax_rows"].functions == ("softmax",)
    assert ax["gelu_zero"].loc.file.endswith("functions.rules") and ax["gelu_zero"].loc.line > 1
    # every rule refers to the vocabulary it was loaded with, and knows the functions it depends on
    r = LIB.rule("channels.silu.drop_channel")
    assert r.vocabulary is LIB.vocabulary
    assert r.functions == ("exp", "sigmoid", "silu")  # silu's means is x * sigmoid(x), sigmoid's uses exp


def test_torch_function_evaluates_the_declared_spelling_on_float64_tensors():
    k = torch.linspace(-3, 3, 13, dtype=torch.float64)
    relu = torch_function(LIB.functions["relu"])
    assert torch.equal(relu(k), torch.relu(k)) and relu(k).dtype == torch.float64
    assert torch.equal(torch_function(LIB.functions["gelu"])(k), F.gelu(k))
    assert torch.equal(torch_function(LIB.functions["gelu_tanh"])(k), F.gelu(k, approximate="tanh"))
    assert float(torch_function(LIB.functions["sigmoid"])(0.0)) == 0.5  # a number becomes a 0-d tensor
    with pytest.raises(TypeError, match="takes 1 argument"):
        relu(k, k)


def test_a_user_directory_declares_its_own_functions_and_axioms(rule_dir):
    rs = load_rules(extra=[rule_dir("elu.rules", """
function elu(x)
  means max(x, 0) + min(exp(x) - 1, 0)
  torch "F.elu({x})"

axiom elu_zero: elu(0) == 0
axiom elu_above: elu(a) > -1

op elu(x: T[*B]) -> T[*B]
  torch "F.elu({x})"
  means out[*I] = elu(x[*I])

rule elu.zero
  match y = elu(x: [*B, n])
  axioms elu_zero
  where x[*B, c] == 0
  then  y[*B, c] == 0
""")])
    assert rs.functions["elu"].params == ("x",) and "relu" in rs.functions  # beside the bundled ones
    assert rs.axioms["elu_zero"].form == Pin("elu", (0,), 0)
    assert rs.axioms["elu_above"].form == Bound("elu", 1, ">", -1)
    assert rs.rule("elu.zero").functions == ("elu", "exp")
    k = torch.linspace(-2, 2, 9, dtype=torch.float64)
    assert torch.equal(torch_function(rs.functions["elu"])(k), F.elu(k))


@pytest.mark.parametrize("fixture, line, col, message", [
    ("unknown_axiom.rules", 5, 10, "unknown axiom 'relu_zer0'"),
    ("unknown_function.rules", 6, 21, "unknown function 'rleu'"),
    ("unsupported_axiom.rules", 3, 1, "unsupported statement"),
])
def test_undeclared_names_and_unusable_axioms_are_errors_with_a_location(fixture, line, col, message):
    with pytest.raises(SrIrError) as e:
        load_rules(extra=[BAD / fixture])
    assert message in e.value.message
    assert (Path(e.value.loc.file).name, e.value.loc.line, e.value.loc.col) == (fixture, line, col)


def test_a_builtin_axiom_must_state_what_the_prover_implements():
    with pytest.raises(SrIrError, match="the prover implements this built-in axiom as") as e:
        load_rules([BAD / "builtin_changed.rules"])
    assert (e.value.loc.line, e.value.loc.col) == (3, 1)


@pytest.mark.parametrize("text, message", [
    ("function relu(x)\n  means max(x, 0)\n", "function 'relu' declared again"),
    ("axiom relu_zero: relu(0) == 0\n", "axiom 'relu_zero' declared again"),
    ("function sum(x)\n", "built-in of the rule language"),
    ("function f(x)\n  torch \"torch.exp({y})\"\n", "uses {y}, which is not a parameter"),
    ("function f(x)\n  means x + y\n", "uses 'y', which is not a parameter"),
    ("function f(x)\n  means g(x)\nfunction g(x)\n  means f(x) + 1\n", "defined in terms of itself"),
    ("function f(x)\n  means sum(j < 3, x)\n", "is not one"),
    ("axiom a_pin: relu(0, 1) == 0\n", "relu takes 1 argument"),
    ("axiom a_pin: relu(a + 1) == 0\n", "a number or a distinct variable"),
    ("builtin axiom relu_nonneg: relu(a) >= 0\n", "no built-in axiom of that name"),
    ("op f2(x: T[*B]) -> T[*B]\n  means out[*I] = nosuch(x[*I])\n", "op 'f2': unknown function 'nosuch'"),
    ("rule t.r\n  match y = relu(x: [*B, n])\n  where x[*B, c] == k\n  then y[*B, c] == relu(k, k)\n",
     "relu takes 1 argument"),
])
def test_declaration_errors(rule_dir, text, message):
    with pytest.raises(SrIrError, match=message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{")
                       .replace("}", r"\}")) as e:
        _load(rule_dir, text)
    assert e.value.loc is not None and e.value.loc.line >= 1


def test_function_and_axiom_text_is_normalised():
    f = LIB.functions["gelu"]
    assert f.text() == "function gelu(x) means ((x * (1 + erf((x / sqrt(2))))) / 2) torch 'F.gelu({x})'"
    assert LIB.axioms["exp_pos"].text() == "axiom exp_pos: exp(a) > 0"
