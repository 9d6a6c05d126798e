"""Side conditions compiled to vectorized tensor checks (the engine's half of 'one predicate language')."""
import math

import torch

from sr_ir.lang.loader import load_rules
from sr_ir.lang.tensor_check import Facts, compile_where


def _rs():
    return load_rules()


def test_zero_row_mask_over_all_channels():
    r = _rs().rule("mul.zero_scale")
    s = torch.randn(5, dtype=torch.float64)
    s[1] = 0
    s[4] = 0
    m = compile_where(r)({"scale": s}, shapes={"x": (2, 5)})
    assert m.mask.tolist() == [False, True, False, False, True]


def test_constant_activation_channel_binds_value_variable():
    r = _rs().rule("relu.const")
    facts = Facts(const={"x": (torch.tensor([True, False, True]), torch.tensor([2.5, 0.0, -1.0]))})
    m = compile_where(r)({}, facts=facts)
    assert m.mask.tolist() == [True, False, True]
    assert m.values["k"][0] == 2.5 and m.values["k"][2] == -1.0 and math.isnan(m.values["k"][1])


def test_parameter_slice_equal_to_a_value_variable():
    r = _rs().rule("embedding.const_column")
    w = torch.randn(6, 3, dtype=torch.float64)
    w[:, 2] = 0.75
    m = compile_where(r)({"weight": w}, shapes={"indices": (2, 5)})
    assert m.mask.tolist() == [False, False, True]
    assert m.values["k"][2] == 0.75


def test_attribute_conditions_and_quantifier_over_mask():
    r = _rs().rule("attention.const_value_dim")
    mask = torch.ones(3, 4, dtype=torch.bool)
    facts = Facts(const={"v": (torch.tensor([True, True]), torch.tensor([1.0, 0.0]))})
    ok = compile_where(r)({"mask": mask}, facts=facts, shapes={"q": (3, 5), "k": (4, 5), "v": (4, 2)})
    assert ok.mask.tolist() == [True, True]
    mask[1] = False  # a fully masked query row: the rule must not apply
    bad = compile_where(r)({"mask": mask}, facts=facts, shapes={"q": (3, 5), "k": (4, 5), "v": (4, 2)})
    assert bad.mask.tolist() == [False, False]


def test_padding_condition_is_checked_on_attributes():
    r = _rs().rule("conv2d.fold_const_1x1")
    facts = Facts(const={"x": (torch.tensor([True, True]), torch.tensor([1.0, 2.0]))})
    w = torch.randn(3, 2, 1, 1)
    yes = compile_where(r)({"weight": w}, attrs={"groups": 1, "padding": [0, 0]}, facts=facts)
    no = compile_where(r)({"weight": w}, attrs={"groups": 1, "padding": [1, 1]}, facts=facts)
    assert yes.mask.all() and not no.mask.any()


def test_vectorized_on_a_large_layer_is_fast():
    import time

    r = _rs().rule("input.gather_unused")
    w = torch.randn(4096, 4096)
    w[:, ::3] = 0
    t0 = time.perf_counter()
    m = compile_where(r)({"weight": w, "bias": torch.zeros(4096)})
    assert time.perf_counter() - t0 < 1.0
    assert int(m.mask.sum()) == len(range(0, 4096, 3))
