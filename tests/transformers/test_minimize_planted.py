"""Must-show: planted transformers minimized by sr_ir.minimize to exactly the known minimal parameter
count, float64 relative error <= 1e-10, float32 at rounding level."""
from __future__ import annotations

import pytest
import torch

from sr_ir.minimization import minimize
from sr_ir.models.transformers import build, example_ids, small_config
from sr_ir.testing import plant, trainable_param_count

FAMILIES = ["pre_ln", "post_ln", "gpt", "llama", "llama_mha"]


def _build(family: str, **kw):
    """`llama_mha`: the Llama family with one key/value head per query head (no repeat_kv)."""
    if family == "llama_mha":
        return build("llama", small_config("llama", n_kv_heads=small_config("llama").n_heads), **kw)
    return build(family, **kw)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def _heads_by_layer(p) -> list[list]:
    """The attention nodes of each layer: the operands of the concat that joins a layer's heads."""
    by_name = p.node_map()
    layers = []
    for n in p.nodes:
        if n.op == "concat":
            heads = [by_name[o.name] for o in n.operands if o.name in by_name
                     and by_name[o.name].op == "scaled_dot_product_attention"]
            if heads:
                layers.append(heads)
    return layers


@pytest.mark.parametrize("family", FAMILIES)
def test_planted_family_minimizes_to_known_count(family):
    model = _build(family, seed=4)
    plan = plant(model, seed=11)
    ids = example_ids(model.cfg, batch=3)
    res = minimize(model, (ids,))
    other = example_ids(model.cfg, batch=5, seed=23)
    assert _rel(res.module(other), model(other)) <= 1e-10
    rep = res.report
    cfg = model.cfg
    assert rep.removed_by_param["tok.weight"] == {1: len(plan.residual)}
    # one attention node per head: the dead ones are gone, every other head keeps its planted widths
    dead = sum(len(h) for h in plan.dead_heads.values())
    assert rep.ops_after["scaled_dot_product_attention"] == cfg.n_layers * cfg.n_heads - dead
    layers = _heads_by_layer(res.program)
    assert len(layers) == cfg.n_layers
    for layer, q in enumerate(layers):
        want_v = sorted(plan.v_width(layer, plan.group(h)) for h in plan.alive_heads(layer))
        assert sorted(n.type.shape[-1] for n in q) == want_v
    assert not rep.refused_rules, rep.refused_rules
    assert trainable_param_count(res.module) == plan.minimal_param_count()
    # float32 copy of the same model: rounding level
    m32 = _build(family, seed=4, dtype=torch.float32)
    plant(m32, seed=11)
    r32 = minimize(m32, (ids,))
    assert _rel(r32.module(other), m32(other)) <= 2e-5


def test_compensated_norms_in_emitted_code():
    model = build("post_ln", seed=1)
    plant(model, seed=2, residual=5)
    res = minimize(model, (example_ids(model.cfg),))
    src = res.module.sr_ir_source
    # the compensated norms are the package's own layers (their op's module clause), attention stays F.
    assert "SN.FixedCompensatedLayerNorm(" in src and "F.scaled_dot_product_attention" in src
    layers = [m for m in res.module.modules() if type(m).__name__ == "FixedCompensatedLayerNorm"]
    assert len(layers) == 2 * model.cfg.n_layers + 1
    # and the torch-only form a saved .py uses spells them out as functions
    from sr_ir.backend import emit_source

    standalone = emit_source(res.module.sr_ir_program, standalone=True)
    assert "def compensated_layer_norm" in standalone and "sr_ir" not in standalone.split('"""', 2)[2]
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
    widths = [n.type.shape[-1] for n in res.program.nodes if n.op == "scaled_dot_product_attention"]
    assert len(widths) == 3 and sorted(widths) == [8 - 4, 8 - 3, 8 - 3]
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
    assert "attention.const_value_dim_masked" not in res.report.rules_used
    assert all(n.type.shape[-1] == 8 for n in res.program.nodes if n.op == "scaled_dot_product_attention")
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
    refuse = {"layer_norm.compensate", "channels.concat.drop_operand_last"}
    book = RuleBook(rs, certify=lambda r, _rs: "refuted (test)" if r.name in refuse else None)
    out, report = minimize_program(prog, rs, book=book)
    heads = model.cfg.n_layers * model.cfg.n_heads
    assert "tok.weight" not in report.removed_by_param  # no stream channel crosses a LayerNorm
    assert report.ops_after["scaled_dot_product_attention"] == heads  # no head goes whole
    assert "channels.attention.drop_value_dim" in report.rules_used  # the other reductions still apply
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
