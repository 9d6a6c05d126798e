"""sr_ir.comparison: the relative error max|a - b| / max|a| every check quotes, its treatment of
non-finite values, and `compare` running two models on the same inputs."""
from __future__ import annotations

import copy
import math
from collections import namedtuple

import pytest
import torch
from torch import nn

from sr_ir.comparison import (Difference, as_dtype, cast_inputs, compare, difference, flat_outputs,
                              random_like)
from sr_ir.errors import VerificationError

nan, inf = float("nan"), float("inf")


def t(*xs, dtype=torch.float64):
    return torch.tensor(xs, dtype=dtype)


def test_identical_outputs_have_no_difference():
    a = torch.randn(3, 4)
    d = difference([a, a * 2], [a.clone(), a * 2])
    assert d.max_abs == 0.0 and d.max_rel == 0.0 and d.finite
    assert d.within(0.0)
    assert d.dtype == "float32"


def test_relative_error_is_max_abs_over_the_largest_reference_magnitude():
    # not elementwise: the small element 0.01 would give 0.5 / 0.01 = 50 per element
    a = t(0.01, -4.0, 2.0)
    b = t(0.51, -4.0, 2.0)
    d = difference([a], [b])
    assert d.max_abs == pytest.approx(0.5)
    assert d.max_rel == pytest.approx(0.5 / 4.0)
    assert d.position == [0]
    assert d.within(0.125 + 1e-12) and not d.within(0.12)


def test_worst_output_and_position_name_the_largest_relative_error():
    a0, b0 = torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    b0[0, 1] += 0.3  # rel 0.3, abs 0.3
    a1 = torch.full((3, 4), 100.0, dtype=torch.float64)
    b1 = a1.clone()
    b1[1, 2] += 1.0  # rel 0.01, but the largest absolute error
    b1[2, 3] += 0.5
    d = difference([a0, a1], [b0, b1])
    assert d.worst_output == 0 and d.position == [0, 1]
    assert d.max_rel == pytest.approx(0.3)
    assert d.max_abs == pytest.approx(1.0)  # the largest over every output
    d = difference([a1, a0], [b1, b0])
    assert d.worst_output == 1 and d.position == [0, 1]


def test_zero_reference_falls_back_to_absolute_error():
    d = difference([torch.zeros(4, dtype=torch.float64)], [t(0.0, 0.0, 1e-3, 0.0)])
    assert d.max_rel == pytest.approx(1e-3) and d.max_abs == pytest.approx(1e-3) and d.position == [2]


def test_nan_at_the_same_place_in_both_is_no_difference():
    a = t(1.0, nan, 3.0)
    d = difference([a], [t(1.0, nan, 3.0)])
    assert d.max_abs == 0.0 and d.max_rel == 0.0 and d.finite and d.within(0.0)
    # the rest is still compared, relative to the largest finite reference value
    d = difference([a], [t(1.0, nan, 3.3)])
    assert d.max_rel == pytest.approx(0.3 / 3.0) and d.position == [2] and d.finite


def test_equal_infinities_are_no_difference_and_do_not_set_the_scale():
    a = t(2.0, inf, -inf)
    d = difference([a], [t(2.0, inf, -inf)])
    assert d.max_abs == 0.0 and d.max_rel == 0.0 and d.finite
    d = difference([a], [t(2.5, inf, -inf)])
    assert d.max_rel == pytest.approx(0.5 / 2.0)  # the scale is max |finite a| = 2
    d = difference([a], [t(2.0, -inf, -inf)])
    assert d.max_rel == inf and not d.within(1.0)


@pytest.mark.parametrize("bad", [nan, inf, -inf])
def test_non_finite_candidate_where_the_reference_is_finite_fails(bad):
    a = t(1.0, 2.0, 3.0)
    d = difference([a], [t(1.0, bad, 3.0)])
    assert d.finite is False
    assert not d.within(1e30)
    assert d.position == [1]


def test_nan_relative_error_fails_within():
    assert not Difference(0.0, nan, 0, "float64").within(1e30)
    assert Difference(0.0, 1e-9, 0, "float64").within(1e-8)
    assert not Difference(0.0, 0.0, 0, "float64", finite=False).within(1.0)


def test_candidate_value_where_the_reference_has_nan_is_a_difference():
    d = difference([t(1.0, nan, 3.0)], [t(1.0, 5.0, 3.0)])
    assert math.isnan(d.max_rel) and not d.within(1.0) and d.position == [1]
    assert d.finite  # the reference was not finite everywhere either


def test_max_abs_does_not_hide_a_nan_difference():
    d = difference([t(1.0, nan, 3.0)], [t(1.0, 5.0, 3.0)])
    assert not d.max_abs == 0.0


def test_the_worst_output_is_a_nan_one_even_after_a_finite_one():
    d = difference([t(1.0), t(1.0, nan)], [t(1.5), t(1.0, 2.0)])
    assert d.worst_output == 1 and math.isnan(d.max_rel)
    d = difference([t(1.0, nan), t(1.0)], [t(1.0, 2.0), t(1.5)])
    assert d.worst_output == 0 and math.isnan(d.max_rel)


def test_count_and_shape_mismatches_raise():
    a = torch.zeros(2, 3)
    with pytest.raises(VerificationError, match="2 outputs before, 1 after"):
        difference([a, a], [a])
    with pytest.raises(VerificationError, match=r"output 1 has shape \(2, 3\) before, \(3, 2\) after"):
        difference([a, a], [a, a.T.contiguous()])


def test_empty_outputs_and_lists():
    d = difference([torch.zeros(0, 3), t(1.0)], [torch.zeros(0, 3), t(1.25)])
    assert d.max_rel == pytest.approx(0.25) and d.worst_output == 1
    d = difference([], [])
    assert d.max_rel == 0.0 and d.dtype == "none" and d.within(0.0)


def test_as_dict_round_trips_the_fields():
    d = difference([t(1.0, 2.0)], [t(1.0, 2.5)])
    assert d.as_dict() == {"max_abs": 0.5, "max_rel": 0.25, "worst_output": 0, "dtype": "float64",
                           "position": [1], "finite": True}


def test_flat_outputs_orders_nested_containers():
    a, b, c, e = (torch.full((1,), float(i)) for i in range(4))
    Out = namedtuple("Out", "x y")

    class ModelOutput:
        def to_tuple(self):
            return (c, [e])

    assert flat_outputs(a) == [a]
    got = flat_outputs((a, [b, {"k": c, "j": (e,)}], "not a tensor", None))
    assert [float(x) for x in got] == [0.0, 1.0, 2.0, 3.0]
    assert [float(x) for x in flat_outputs(Out(b, a))] == [1.0, 0.0]
    assert [float(x) for x in flat_outputs(ModelOutput())] == [2.0, 3.0]
    assert flat_outputs(3.0) == []


def test_compare_runs_both_models_on_the_inputs():
    torch.manual_seed(0)
    ref = nn.Linear(4, 3).double()
    cand = copy.deepcopy(ref)
    x = torch.randn(5, 4, dtype=torch.float64)
    d = compare(ref, cand, [x])
    assert d.max_abs == 0.0 and d.within(0.0)
    with torch.no_grad():
        cand.bias[2] += 0.1
    d = compare(ref, cand, [x])
    y = ref(x).detach()
    assert d.max_abs == pytest.approx(0.1)
    assert d.max_rel == pytest.approx(0.1 / float(y.abs().max()))
    assert d.position[1] == 2 and d.dtype == "float64"


def test_compare_flattens_multiple_outputs_and_checks_their_count():
    x = torch.arange(6.0).reshape(2, 3)
    d = compare(lambda v: (v, {"s": v.sum(1)}), lambda v: (v, {"s": v.sum(1) + 1.0}), [x])
    assert d.worst_output == 1 and d.max_abs == pytest.approx(1.0) and d.max_rel == pytest.approx(1.0 / 12.0)
    with pytest.raises(VerificationError):
        compare(lambda v: (v, v), lambda v: v, [x])


def test_compare_does_not_record_gradients():
    seen = []

    def model(v):
        seen.append(torch.is_grad_enabled())
        return v * 2

    compare(model, model, [torch.ones(2, requires_grad=True)])
    assert seen == [False, False]


def test_as_dtype_copies_and_cast_inputs_only_touches_floats():
    m = nn.Linear(2, 2)
    m64 = as_dtype(m, torch.float64)
    assert m64.weight.dtype == torch.float64 and m.weight.dtype == torch.float32
    x, ids = torch.ones(2), torch.tensor([1, 2])
    cx, cids, other = cast_inputs([x, ids, 7], torch.float64)
    assert cx.dtype == torch.float64 and cids.dtype == torch.int64 and other == 7


def test_random_like_keeps_shapes_and_index_ranges():
    ex = [torch.randn(3, 5) * 30, torch.tensor([[0, 6], [2, 1]]), "mode"]
    a = random_like(ex, seed=4, batch=7)
    b = random_like(ex, seed=4, batch=7)
    assert a[0].shape == (7, 5) and a[1].shape == (7, 2) and a[2] == "mode"
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[1].dtype == torch.int64 and int(a[1].min()) >= 0 and int(a[1].max()) <= 6
    assert not torch.equal(random_like(ex, seed=5)[0], random_like(ex, seed=4)[0])
    assert random_like(ex, seed=4)[0].shape == (3, 5)
