"""examples/gqa_no_rope: grouped-query and multi-query attention without RoPE (repeat_kv written as
unsqueeze/expand/reshape) is not raised by the bundled rules, so its dead heads stay; the example's one
raise rule gives it per-head form, and the bundled minimize rules then remove the dead heads (and a
key/value head whose whole group is dead) exactly."""
import torch

from sr_ir.cli.main import main
from sr_ir.minimization import minimize

from ._example import example_dir, load_model_module, param_count, rel_err

EX = example_dir("gqa_no_rope")
M = load_model_module("gqa_no_rope")

D, H, HD, FF, V, L = 16, 4, 4, 32, 32, 6


def _attn(g: int) -> int:  # q, k, v, o with biases for g key/value heads
    return (H * HD * D + H * HD) + 2 * (g * HD * D + g * HD) + (D * H * HD + D)


# by hand: tok + pos + per block (2 LayerNorms, attention, fc1, fc2) + final LayerNorm + head
BLOCK = 2 * 2 * D + FF * D + FF + D * FF + D
BEFORE = V * D + L * D + (BLOCK + _attn(2)) + (BLOCK + _attn(1)) + 2 * D + D * V + V
DEAD_Q = HD * (D + 1) + D * HD  # a dead query head: its q rows with their bias, its o columns
DEAD_KV = 2 * HD * (D + 1)  # a dead key/value head: its k and v rows with their biases
# layer 0: query heads 0, 1, 3 (0 and 1 are key/value head 0's whole group); layer 1 (multi-query): head 2
AFTER = BEFORE - 4 * DEAD_Q - DEAD_KV


def _attention_nodes(res) -> int:
    return sum(n.op == "scaled_dot_product_attention" for n in res.program.nodes)


def test_certificates_are_current(capsys):
    assert main(["prove", str(EX), "--check"]) == 0
    assert "1/1 rules have a current certificate" in capsys.readouterr().out


def test_bundled_rules_alone_keep_the_dead_heads():
    """Verified first: with the bundled rules only, each layer stays one attention over all heads."""
    model = M.planted()
    res = minimize(model, M.example_inputs())
    r = res.report
    assert r.params_before == r.params_after == param_count(model) == BEFORE == 4952
    assert _attention_nodes(res) == 2 and r.ops_after.get("expand") == 4
    assert not any(name.startswith("raise.attention") for name in r.rules_used)


def test_example_raise_removes_the_dead_heads():
    model = M.planted()
    res = minimize(model, M.example_inputs(), rules=EX)
    r = res.report
    assert r.params_before == BEFORE
    assert r.params_after == param_count(res.module) == AFTER == 4288
    assert r.refused_rules == {}
    assert "raise.attention.heads_grouped" in r.rules_used
    # one attention per live query head: layer 0 keeps head 2, layer 1 keeps heads 0, 1, 3
    assert _attention_nodes(res) == 1 + 3 and "expand" not in r.ops_after
    s = r.kept_by_param
    assert s["blocks.0.attn.q.weight"] == [HD, D] and s["blocks.0.attn.o.weight"] == [D, HD]
    assert s["blocks.0.attn.k.weight"] == s["blocks.0.attn.v.weight"] == [HD, D]  # key/value head 1 only
    assert s["blocks.1.attn.q.weight"] == [3 * HD, D] and s["blocks.1.attn.o.weight"] == [D, 3 * HD]
    assert s["blocks.1.attn.k.weight"] == s["blocks.1.attn.v.weight"] == [HD, D]  # the shared head stays
    w, a0 = res.program.weights, model.blocks[0].attn
    assert torch.equal(w["blocks.0.attn.q.weight"], a0.q.weight[2 * HD:3 * HD])
    assert torch.equal(w["blocks.0.attn.k.weight"], a0.k.weight[HD:2 * HD])
    assert r.verification["float64"]["max_rel"] <= 1e-12
    x = torch.randint(0, V, (3, L))
    with torch.no_grad():
        assert rel_err(res.module(x), model(x)) <= 1e-12
