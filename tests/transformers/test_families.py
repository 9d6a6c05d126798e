"""The transformer families lower with attention raised to explicit heads and emit back exactly; planted
structure is exactly removable, to the known minimal parameter count (independent reference)."""
from __future__ import annotations

import pytest
import torch

from sr_ir.backend import emit
from sr_ir.frontend import lower
from sr_ir.models.transformers import build, example_ids, small_config
from sr_ir.testing import plant, trainable_param_count
from sr_ir.testing.reference import reference_minimize

FAMILIES = ["pre_ln", "post_ln", "gpt", "llama"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def _ops(p) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in p.nodes:
        out[n.op] = out.get(n.op, 0) + 1
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_lower_raises_attention_and_emits_exactly(family):
    model = build(family)
    ids = example_ids(model.cfg)
    prog = lower(model, (ids,))
    ops = _ops(prog)
    cfg = model.cfg
    # one attention per head over slices of the projections, nothing left of the head views
    assert ops.get("scaled_dot_product_attention") == cfg.n_layers * cfg.n_heads
    assert "permute" not in ops and "reshape" not in ops
    if family == "llama":
        assert ops.get("rms_norm") == 2 * cfg.n_layers + 1
        # RoPE raised: one rotation per query head and per key/value head (shared by its query heads)
        assert ops.get("rope") == cfg.n_layers * (cfg.n_heads + cfg.kv_heads)
        assert "expand" not in ops
    out = emit(prog)
    other = example_ids(model.cfg, batch=3, seed=7)  # dynamic batch
    assert _rel(out(other), model(other)) <= 1e-12
    assert trainable_param_count(out) == trainable_param_count(model)


def test_padding_mask_passes_through():
    model = build("pre_ln")
    ids = example_ids(model.cfg)
    pad = torch.ones_like(ids, dtype=torch.bool)
    pad[1, 8:] = False
    prog = lower(model, (ids, pad))
    attn = [n for n in prog.nodes if n.op == "scaled_dot_product_attention"]
    assert len(attn) == model.cfg.n_layers * model.cfg.n_heads
    assert all(len(n.operands) == 4 and n.operands[3] is not None for n in attn)
    assert _rel(emit(prog)(ids, pad), model(ids, pad)) <= 1e-12


def test_float32_emission_rounding_level():
    model = build("llama", dtype=torch.float32)
    ids = example_ids(model.cfg)
    assert _rel(emit(lower(model, (ids,)))(ids), model(ids)) <= 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_structure_is_exactly_removable(family):
    model = build(family, seed=2)
    plan = plant(model, seed=5)
    ids = example_ids(model.cfg, batch=3)
    ref = reference_minimize(model, plan)
    y = model(ids)
    assert plan.original_param_count() == trainable_param_count(model)
    assert ref.param_count() == plan.minimal_param_count() < 0.75 * plan.original_param_count()
    assert _rel(ref(ids), y) <= 1e-12
    # what peers do (norm statistics over the kept channels only) is wrong by orders of magnitude more
    assert _rel(ref(ids, naive_norms=True), y) > 1e-4


def test_plan_components_add_up():
    model = build("llama", small_config("llama", n_layers=3), seed=1)
    plan = plant(model, seed=0, dead_heads=1, v_dims=3, qk_dims=4, mlp_units=5, residual=4, sparsity=0.5)
    assert plan.dead_heads[0] in ([0, 1], [2, 3])  # a whole GQA group in layer 0
    assert all(len(d) == 4 for g in plan.qk_dims.values() for d in g.values())
    comp = plan.components()
    assert sum(v[0] for v in comp.values()) == trainable_param_count(model)
    assert all(v[1] < v[0] for v in comp.values())
    ref = reference_minimize(model, plan)
    ids = example_ids(model.cfg)
    assert _rel(ref(ids), model(ids)) <= 1e-12
