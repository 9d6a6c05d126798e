"""The report's name map: every state_dict key of the minimized module names the original model's key
it came from, and how (as is, renamed by the lowering, sliced, rewritten, or made by a rewrite)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

import sr_ir


def test_pruned_cnn_with_a_folded_batch_norm():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8 * 6 * 6, 10)).eval()
    with torch.no_grad():
        m[1].running_mean.uniform_()
        m[1].running_var.uniform_(0.5, 2)
        m[0].weight[2] = 0
        m[1].bias[2] = -1  # relu(bn(0)) = relu(-1) = 0: channel 2 is dead
    prune.l1_unstructured(m[4], "weight", 0.5)
    r = sr_ir.minimize(m, (torch.randn(2, 3, 8, 8),))
    names = r.report.names
    assert set(names) == set(r.module.state_dict())
    # torch.nn.utils.prune keeps weight_orig and weight_mask: the user's key is weight_orig
    assert names["4.weight"]["original"] == "4.weight_orig"
    assert names["4.weight"]["how"] == "computed from 4.weight_orig, 4.weight_mask; sliced [10, 288] -> [10, 252]"
    assert names["4.bias"] == {"original": "4.bias", "how": "as is"}
    assert names["0.weight"]["how"] == ("rewritten by a substitution rule (a norm folded in); "
                                        "sliced [8, 3, 3, 3] -> [7, 3, 3, 3]")
    assert names["0.bias"]["original"] is None and "substitution" in names["0.bias"]["how"]
    assert r.report.removed_params == ["1.bias", "1.running_mean", "1.running_var", "1.weight"]
    assert r.name_map == {"4.weight": "4.weight_orig", "4.bias": "4.bias", "0.weight": "0.weight", "0.bias": None}
    assert "parameter names: 1 as is, 1 renamed, 1 changed, 1 computed, 4 removed (report.names)" in r.report.table()
    d = json.loads(json.dumps(r.report.to_dict()))
    assert d["names"]["4.weight"]["original"] == "4.weight_orig" and len(d["removed_params"]) == 4


def test_unused_input_features_and_folded_constants():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        m[0].weight[:, 3] = 0  # input feature 3 is read by nobody
        m[0].weight[5] = 0  # unit 5 is the constant relu(b5), folded into the next bias
        m[0].bias[5] = 0.5
    r = sr_ir.minimize(m, (torch.randn(2, 20),))
    names = r.report.names
    assert names["0.weight"]["how"] == "sliced [16, 20] -> [15, 19]"
    assert names["2.weight"]["how"] == "sliced [4, 16] -> [4, 15]"
    assert names["2.bias"]["how"] == "values rewritten (constants folded in)"
    kept = [n for n in names if n.endswith("_kept")]  # named after the model's input
    assert len(kept) == 1 and names[kept[0]] == {"original": None, "how": "new: indices of the input features kept"}
    assert r.report.removed_params == []


def test_gpt2_conv1d_weights_map_back_to_their_transposed_originals():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=16,
                                  bos_token_id=0, eos_token_id=0)
    m = transformers.GPT2Model(cfg).eval()
    with torch.no_grad():
        m.h[0].mlp.c_fc.weight[:, :5] = 0  # Conv1D stores [in, out]: 5 dead MLP units
    r = sr_ir.minimize(m, (torch.randint(0, 50, (2, 8)),))
    nm = r.name_map
    assert nm["h.0.mlp.c_fc.weight_t"] == "h.0.mlp.c_fc.weight"
    assert r.report.names["h.0.mlp.c_fc.weight_t"]["how"] == "transposed; sliced [128, 32] -> [123, 32]"
    assert r.report.names["h.0.attn.c_attn.weight_t"]["how"] == "transposed"
    original = dict(m.state_dict())
    # every key maps to a real key of the model, or to None for a constant the model computes
    # (GPT-2's causal-mask code), which the map says
    for key, orig in nm.items():
        assert orig in original or (orig is None and r.report.names[key]["how"].startswith("a constant the model computes"))
    w = r.module.state_dict()["h.0.attn.c_attn.weight_t"]
    assert torch.equal(w, original["h.0.attn.c_attn.weight"].t())
