"""Must-show: planted transformers minimized by sr_ir.minimize to exactly the known minimal parameter
count, float64 relative error <= 1e-10, float32 at rounding level."""
from __future__ import annotations

import pytest
import torch

from sr_ir.minimization import minimize
from sr_ir.models.transformers import build, example_ids, small_config
from sr_ir.testing import plant, trainable_param_count

FAMILIES = ["pre_ln", "post_ln", "gpt", "llama"]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_family_minimizes_to_known_count(family):
    model = build(family, seed=4)
    plan = plant(model, seed=11)
    ids = example_ids(model.cfg, batch=3)
    res = minimize(model, (ids,))
    other = example_ids(model.cfg, batch=5, seed=23)
    assert _rel(res.module(other), model(other)) <= 1e-10
    tr = res.report.transformer
    assert res.report.removed_by_param["tok.weight"] == {1: len(plan.residual)}
    assert tr["heads"] == sum(len(h) for h in plan.dead_heads.values())
    assert tr["qk_dims"] == sum(len(d) for g in plan.qk_dims.values() for d in g.values())
    assert tr["v_dims"] == sum(len(d) for g in plan.v_dims.values() for d in g.values())
    assert not res.report.refused_rules, res.report.refused_rules
    assert trainable_param_count(res.module) == plan.minimal_param_count()
    # float32 copy of the same model: rounding level
    m32 = build(family, seed=4, dtype=torch.float32)
    plant(m32, seed=11)
    r32 = minimize(m32, (ids,))
    assert _rel(r32.module(other), m32(other)) <= 2e-5


def test_compensated_norms_in_emitted_code():
    model = build("post_ln", seed=1)
    plant(model, seed=2, residual=5)
    res = minimize(model, (example_ids(model.cfg),))
    src = res.module.sr_ir_source
    assert "def compensated_layer_norm" in src and "def head_attention" in src
    ops = [n.op for n in res.program.nodes]
    assert ops.count("compensated_layer_norm") == 2 * model.cfg.n_layers + 1
    norm = next(n for n in res.program.nodes if n.op == "compensated_layer_norm")
    assert norm.attrs["n_total"] == model.cfg.d_model and norm.type.shape[-1] == model.cfg.d_model - 5


def test_heads_end_with_different_widths():
    model = build("pre_ln", small_config("pre_ln", n_layers=1), seed=3)
    plant(model, seed=4, dead_heads=1, v_dims=3, qk_dims=2, residual=0, mlp_units=0, sparsity=0.0)
    with torch.no_grad():  # one more constant value dim on one head only
        alive = [h for h in range(4) if not bool((model.blocks[0].attn.o_proj.weight[:, h * 8:(h + 1) * 8] == 0).all())]
        row = alive[0] * 8 + next(d for d in range(8) if not bool((model.blocks[0].attn.v_proj.weight[alive[0] * 8 + d] == 0).all()))
        model.blocks[0].attn.v_proj.weight[row] = 0.0
    res = minimize(model, (example_ids(model.cfg),))
    attn = next(n for n in res.program.nodes if n.op == "head_attention")
    assert len(attn.attrs["v_dims"]) == 3 and len(set(attn.attrs["v_dims"])) == 2
    ids = example_ids(model.cfg, seed=5)
    assert _rel(res.module(ids), model(ids)) <= 1e-10


def test_fully_maskable_rows_keep_constant_value_dims():
    """A constant value dim is folded only when every query attends to a key: with a padding mask given as
    a model input, a row could be fully masked, so the dim stays (minimization.md section 4)."""
    model = build("pre_ln", small_config("pre_ln", n_layers=1), seed=3)
    plant(model, seed=4, residual=0, mlp_units=0, qk_dims=0)
    ids = example_ids(model.cfg)
    pad = torch.ones_like(ids, dtype=torch.bool)
    res = minimize(model, (ids, pad))
    assert res.report.transformer["v_dims_folded"] == 0
    pad[0, 5:] = False
    assert _rel(res.module(ids, pad), model(ids, pad)) <= 1e-10


def test_reductions_need_certified_rules():
    """Each transformer reduction applies named rules of rules/minimize/; without a current certificate for
    layer_norm.compensate no stream channel goes through a LayerNorm, and the refusal is reported."""
    from sr_ir.frontend import lower
    from sr_ir.lang.loader import default_rules
    from sr_ir.minimization import minimize_program
    from sr_ir.rewrite.rulebook import RuleBook

    model = build("pre_ln", seed=4)
    plant(model, seed=11)
    prog = lower(model, (example_ids(model.cfg),))
    rs = default_rules()
    refuse = {"layer_norm.compensate", "attention.unused_head"}
    book = RuleBook(rs, certify=lambda r, _rs: "refuted (test)" if r.name in refuse else None)
    out, report = minimize_program(prog, rs, book=book)
    assert "tok.weight" not in report.removed_by_param and report.transformer["heads"] == 0
    assert report.transformer["v_dims"] > 0  # the other reductions still apply
    assert refuse <= set(book.refused)


@pytest.mark.parametrize("family", ["post_ln", "llama"])
def test_minimized_module_deploys(family):
    """The minimized module (unequal heads, compensated norms, RoPE) runs under torch.export and exports to
    ONNX; onnxruntime matches at float32 rounding."""
    ort = pytest.importorskip("onnxruntime")
    import io
    import warnings

    model = build(family, seed=4, dtype=torch.float32)
    plant(model, seed=11)
    ids = example_ids(model.cfg)
    res = minimize(model, (ids,))
    ref = model(ids)
    assert _rel(torch.export.export(res.module, (ids,)).module()(ids), ref) <= 2e-6
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(res.module, (ids,), buf, input_names=["ids"], dynamo=False)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"ids": ids.numpy()})
    assert _rel(torch.from_numpy(y), ref) <= 2e-6
