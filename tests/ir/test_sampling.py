"""sr_ir.ir.sampling: random inputs that fit a program's input types (symbolic dims take `batch`,
integer inputs are valid indices of what they index)."""
from __future__ import annotations

import torch

import sr_ir
from sr_ir.ir.sampling import index_bound, sample_inputs

TEXT = """graph m(%x: f32[N, 8], %ids: i64[N, 3], %m: bool[N, 3], %k: i32[2*N]) -> (f32[N, 3, 4], f32[N, 4]) {
  buffer @table: f32[10, 4]
  param @fc.weight: f32[4, 8]
  %e = embedding(@table, %ids) : f32[N, 3, 4]
  %h = linear(%x, @fc.weight) : f32[N, 4]
  return %e, %h
}
"""

NARROW = """graph m(%ids: i64[N, 6]) -> (f32[N, 6, 8]) {
  param @emb: f32[3, 8]
  %e = embedding(@emb, %ids) : f32[N, 6, 8]
  return %e
}
"""


def test_shapes_take_batch_for_symbolic_dims():
    p = sr_ir.parse(TEXT)
    x, ids, m, k = sample_inputs(p, batch=5)
    assert x.shape == (5, 8) and ids.shape == (5, 3) and m.shape == (5, 3)
    assert k.shape == (10,)  # 2*N
    x, ids, m, k = sample_inputs(p)
    assert x.shape == (2, 8) and k.shape == (4,)


def test_dtypes_follow_the_input_types_and_dtype_only_replaces_floats():
    p = sr_ir.parse(TEXT)
    x, ids, m, k = sample_inputs(p, batch=3)
    assert (x.dtype, ids.dtype, m.dtype, k.dtype) == (torch.float32, torch.int64, torch.bool, torch.int32)
    x, ids, m, k = sample_inputs(p, batch=3, dtype=torch.float64)
    assert (x.dtype, ids.dtype, m.dtype, k.dtype) == (torch.float64, torch.int64, torch.bool, torch.int32)


def test_integer_inputs_are_valid_indices_of_the_table_read_beside_them():
    p = sr_ir.parse(NARROW)
    assert index_bound(p, "ids") == 3
    seen = torch.cat([sample_inputs(p, batch=8, seed=s)[0].flatten() for s in range(5)])
    assert int(seen.min()) >= 0 and int(seen.max()) < 3
    assert set(seen.tolist()) == {0, 1, 2}  # the whole valid range is drawn
    p = sr_ir.parse(TEXT)
    ids = sample_inputs(p, batch=16)[1]
    rows = p.params["table"].shape[0]
    assert int(ids.min()) >= 0 and int(ids.max()) < rows
    assert int(ids.max()) < index_bound(p, "ids") <= rows


def test_an_integer_input_read_beside_no_parameter_is_drawn_below_two():
    p = sr_ir.parse(TEXT)
    assert index_bound(p, "k") == 2
    k = sample_inputs(p, batch=50)[3]
    assert set(k.tolist()) <= {0, 1}


def test_the_program_with_sampled_inputs_runs():
    p = sr_ir.parse(NARROW)
    p.weights = {"emb": torch.randn(3, 8)}
    (ids,) = sample_inputs(p, batch=4)
    y = sr_ir.emit(p)(ids)
    assert y.shape == (4, 6, 8)
    assert torch.equal(y, p.weights["emb"][ids])


def test_seed_decides_the_values():
    p = sr_ir.parse(TEXT)
    a, b, c = sample_inputs(p, seed=3), sample_inputs(p, seed=3), sample_inputs(p, seed=4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
