"""Ops whose semantics are real arithmetic take floating-point tensors only (dtype variable `F` in their
declarations): an integer or boolean program is refused at parse time with its location, instead of
being accepted and then failing in torch (`"GeluKernelImpl" not implemented for 'Long'`) or computing
in integers what the prover proved over the reals."""
import pytest

import sr_ir
from sr_ir.lang.loader import default_rules
from sr_ir.testing.ir_mutation import run_as_declared

UNARY = ["relu", "gelu", "silu", "tanh", "sigmoid", "hardswish", "hardsigmoid", "relu6", "hardtanh", "neg", "rsqrt"]


def _unary(op: str, dtype: str) -> str:
    return f"graph g(%x: {dtype}[N, 4]) -> ({dtype}[N, 4]) {{\n  %y = {op}(%x) : {dtype}[N, 4]\n  return %y\n}}\n"


@pytest.mark.parametrize("dtype", ["i64", "i32", "bool"])
@pytest.mark.parametrize("op", UNARY)
def test_float_ops_refuse_other_dtypes_with_a_location(op, dtype):
    with pytest.raises(sr_ir.TypeCheckError, match=r"<string>:2:\d+: .*must be a floating-point tensor"):
        sr_ir.parse(_unary(op, dtype))


@pytest.mark.parametrize("dtype", ["f16", "bf16", "f32", "f64"])
def test_float_ops_take_every_float_dtype(dtype):
    p = sr_ir.parse(_unary("gelu", dtype))
    assert run_as_declared(p)


def test_contractions_and_division_are_float_only():
    text = ("graph g(%x: i64[N, 4]) -> (i64[N, 3]) {\n  param @w: i64[3, 4]\n"
            "  %y = linear(%x, @w) : i64[N, 3]\n  return %y\n}\n")
    with pytest.raises(sr_ir.TypeCheckError, match="must be a floating-point tensor"):
        sr_ir.parse(text)
    # true division: torch gives a float for integers, which the declared i64 result would not be
    text = "graph g(%x: i64[N, 4]) -> (i64[N, 4]) {\n  %y = div(%x, %x) : i64[N, 4]\n  return %y\n}\n"
    with pytest.raises(sr_ir.TypeCheckError, match="must be a floating-point tensor"):
        sr_ir.parse(text)


def test_integer_index_arithmetic_is_still_a_program():
    """add, sub and mul stay over any dtype: models compute position ids with them (RoBERTa's
    `cumsum(mask) * mask + padding_idx`); the planner pins integer values, so no rule rewrites them."""
    text = "graph g(%x: i64[N, 4]) -> (i64[N, 4]) {\n  %y = add(%x, %x) : i64[N, 4]\n  %z = mul(%y, %x) : i64[N, 4]\n  return %z\n}\n"
    assert run_as_declared(sr_ir.parse(text))


def test_data_movement_still_takes_any_dtype():
    text = ("graph g(%x: i64[N, 4]) -> (i64[4, N]) {\n  %y = permute(%x, dims=[1, 0]) : i64[4, N]\n"
            "  return %y\n}\n")
    assert run_as_declared(sr_ir.parse(text))


def test_the_float_class_is_declared_in_the_rule_text(tmp_path):
    """What decides is the declaration's dtype variable: gelu declared over `T` takes i64."""
    import shutil

    from sr_ir.ir.checker import check_program
    from sr_ir.lang.loader import load_rules
    from sr_ir.resources import data_dir

    rules = tmp_path / "rules"
    shutil.copytree(data_dir("rules"), rules)
    core = rules / "ops" / "core.rules"
    text = core.read_text()
    assert "op gelu(x: F[*B]" in text
    core.write_text(text.replace("op gelu(x: F[*B], approximate: str = \"none\") -> F[*B]",
                                 "op gelu(x: T[*B], approximate: str = \"none\") -> T[*B]"))
    program = sr_ir.parse(_unary("gelu", "i64"), check=False)
    with pytest.raises(sr_ir.TypeCheckError, match="floating-point"):
        check_program(program, default_rules())
    check_program(program, load_rules([rules]))
