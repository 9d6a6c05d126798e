"""Models written by others (PyTorch's nn.TransformerEncoder, Hugging Face BERT / GPT-2 / Llama built from
configs) go through lower -> minimize -> emit with planted dead heads, value dims, query dims, MLP units
(and residual channels for GPT-2) removed to the expected count, float64 error <= 1e-10."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sr_ir.backend import emit
from sr_ir.minimization import minimize
from .test_hf_models import hf_model

E, H, HD, FF = 32, 4, 8, 48


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _head_widths(res) -> list[int]:
    """The value width of every attention node (one per head) of the minimized program."""
    return [n.type.shape[-1] for n in res.program.nodes if n.op == "scaled_dot_product_attention"]


@torch.no_grad()
def _plant_rows(q: torch.Tensor, q_bias, v: torch.Tensor, o_cols: torch.Tensor, fc1: torch.Tensor, fc1_bias,
                out_dim_first: bool = True, units: bool = True) -> int:
    """Dead head 1, value dims 2 and 5 of head 0, query dim 3 of head 2, MLP units 7 and 9: the parameters an
    exact minimizer removes, for one layer whose linears have biases (E inputs per row)."""
    T = (lambda t: t) if out_dim_first else (lambda t: t.t())
    T(o_cols)[:, HD:2 * HD] = 0  # output projection columns of head 1
    for d in (2, 5):
        T(v)[d] = 0
    T(q)[2 * HD + 3] = 0
    q_bias[2 * HD + 3] = 0
    if units:
        for u in (7, 9):
            T(fc1)[u] = 0
    head = 3 * HD * (E + 1) + E * HD
    vdims = 2 * ((E + 1) + E)
    qk = 2 * (E + 1)
    return head + vdims + qk + (2 * ((E + 1) + E) if units else 0)


@pytest.mark.parametrize("norm_first", [False, True])
def test_torch_transformer_encoder(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval().double()
    with torch.no_grad():  # PyTorch initialises these biases to zero; constants must be nonzero to matter
        for lyr in model.layers:
            lyr.self_attn.in_proj_bias.normal_()
            lyr.self_attn.out_proj.bias.normal_()
    removed = 0
    for lyr in model.layers:
        w, b = lyr.self_attn.in_proj_weight, lyr.self_attn.in_proj_bias
        removed += _plant_rows(w[:E], b[:E], w[2 * E:], lyr.self_attn.out_proj.weight, lyr.linear1.weight,
                               lyr.linear1.bias)
    x = torch.randn(2, 8, E, dtype=torch.float64)
    res = minimize(model, (x,))
    y = torch.randn(3, 8, E, dtype=torch.float64)
    assert _rel(res.module(y), model(y)) <= 1e-10
    assert _count(res.module) == _count(model) - removed
    # per layer: head 1 gone, head 0 lost its two constant value dims
    assert sorted(_head_widths(res)) == sorted([HD - 2, HD, HD] * 2)


@pytest.mark.parametrize("name", ["bert", "roberta"])
def test_hf_bert_family(name):
    """BERT, and RoBERTa whose position ids are computed from the input ids (ne, cumsum, gather)."""
    model = hf_model(name).double()
    removed = 0
    for lyr in model.m.encoder.layer:
        a = lyr.attention.self
        removed += _plant_rows(a.query.weight, a.query.bias, a.value.weight, lyr.attention.output.dense.weight,
                               lyr.intermediate.dense.weight, lyr.intermediate.dense.bias)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    res = minimize(model, (ids,))
    assert _rel(res.module(ids), model(ids)) <= 1e-10
    # lowering at 8 tokens keeps 8 rows of the position table and the token-type row in use
    assert _count(res.module) == _count(emit(res.original)) - removed


def test_hf_gpt2_with_residual_channels_and_tied_embeddings():
    """GPT-2: packed c_attn (Conv1D, weight [in, out]) split into q/k/v, tied wte, plus two residual
    channels: wte columns 0, wpe columns constant, every c_proj column zero, every LayerNorm gamma 0."""
    model = hf_model("gpt2").double()
    tr = model.m.transformer
    removed_layers = 0
    chans = [4, 17]
    with torch.no_grad():
        for blk in tr.h:
            w, b = blk.attn.c_attn.weight, blk.attn.c_attn.bias  # [E, 3E]
            # MLP units 7 and 9: GPT-2's MLP runs on [B*L, 4E] views (Conv1D); channels.reshape.merge_leading
            # and split_leading carry the hidden axis through them
            removed_layers += _plant_rows(w[:, :E], b[:E], w[:, 2 * E:], blk.attn.c_proj.weight,
                                          blk.mlp.c_fc.weight, blk.mlp.c_fc.bias, out_dim_first=False)
            blk.attn.c_proj.weight[:, chans] = 0
            blk.mlp.c_proj.weight[:, chans] = 0
            blk.ln_1.weight[chans] = 0
            blk.ln_2.weight[chans] = 0
        tr.ln_f.weight[chans] = 0
        tr.wte.weight[:, chans] = 0
        tr.wpe.weight[:, chans] = torch.tensor([0.3, -1.2], dtype=torch.float64)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    res = minimize(model, (ids,))
    assert _rel(res.module(ids), model(ids)) <= 1e-10
    assert res.report.removed_by_param["m.lm_head.weight"] == {1: 2}  # the tied wte: the stream loses 2 channels
    # the residual channels after the layer removals: every stream-width tensor loses 2 of 32
    e_left = E - 2
    per_layer_min = (
        (3 * E - 3 * HD - 2 - 2) * (e_left + 1)  # q/k/v rows left (dead head, a qk dim twice, 2 v dims)
        + e_left * (E - HD - 2) + e_left  # out projection columns left, its bias
        + (4 * E - 2) * (e_left + 1) + e_left * (4 * E - 2) + e_left  # MLP, units 7 and 9 gone
        + 4 * e_left  # two LayerNorms
    )
    want = 64 * e_left + 8 * e_left + 2 * per_layer_min + 2 * e_left
    assert _count(res.module) == want


def test_hf_llama_float32():
    """Llama (RMSNorm, RoPE, grouped-query attention, SwiGLU, no biases) in float32: a dead group of query
    heads frees its key/value head; a zero key rotation pair goes from q and k; gated units go."""
    model = hf_model("llama")
    cfg = model.m.config
    with torch.no_grad():
        for lyr in model.m.model.layers:
            at = lyr.self_attn
            at.o_proj.weight[:, 2 * HD:4 * HD] = 0  # query heads 2, 3 = key/value head 1
            at.k_proj.weight[[1, 1 + HD // 2]] = 0  # rotation pair 1 of key/value head 0
            lyr.mlp.gate_proj.weight[[3, 30]] = 0
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    res = minimize(model, (ids,))
    assert _rel(res.module(ids), model(ids)) <= 1e-5
    assert res.report.ops_after["scaled_dot_product_attention"] == 4  # query heads 2, 3 of each layer gone
    assert all(res.report.removed_by_param[f"m.model.layers.{i}.mlp.gate_proj.weight"][0] == 2 for i in range(2))
    per_layer = 2 * HD * E + HD * E * 2 + E * 2 * HD + 2 * (HD // 2 * 0 + 2) * E + 2 * 3 * E
    # q rows: 2 heads x 8 + 2 dims of 2 heads of group 0; k: 8 + 2; v: 8; o cols: 16; gate/up/down: 2 units
    per_layer = (2 * HD * E + 2 * 2 * E) + (HD * E + 2 * E) + HD * E + E * 2 * HD + 3 * 2 * E
    assert _count(res.module) == _count(model) - 2 * per_layer
    assert cfg.num_key_value_heads == 2


class _MHABlock(nn.Module):
    """A user model calling nn.MultiheadAttention the default way (need_weights=True: bmm + softmax path)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(E, H, batch_first=True)
        self.ff = nn.Linear(E, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _weights = self.attn(x, x, x)
        return self.ff(y + x)


def test_standalone_multihead_attention_need_weights():
    torch.manual_seed(0)
    model = _MHABlock().eval().double()
    with torch.no_grad():
        model.attn.in_proj_bias.normal_()
        model.attn.out_proj.weight[:, 3 * HD:] = 0  # head 3 dead
        model.attn.in_proj_weight[2 * E + 1] = 0  # value dim 1 of head 0 constant
    x = torch.randn(2, 8, E, dtype=torch.float64)
    res = minimize(model, (x,))
    assert [n.op for n in res.original.nodes].count("scaled_dot_product_attention") == H  # raised per head
    y = torch.randn(3, 8, E, dtype=torch.float64)
    assert _rel(res.module(y), model(y)) <= 1e-10
    assert sorted(_head_widths(res)) == [HD - 1, HD, HD]
    assert _count(res.module) == _count(model) - (3 * HD * (E + 1) + E * HD) - (2 * E + 1)


class _Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerDecoderLayer(E, H, FF, dropout=0.0, batch_first=True)
        self.dec = nn.TransformerDecoder(layer, 2)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.shape[1], dtype=tgt.dtype)
        return self.dec(tgt, memory, tgt_mask=mask, tgt_is_causal=True)


def test_torch_transformer_decoder_cross_attention():
    """nn.TransformerDecoder: causal self-attention and cross-attention (queries from the target, keys and
    values from the memory, different lengths) raised; a dead cross-attention head removed."""
    torch.manual_seed(0)
    model = _Decoder().eval().double()
    with torch.no_grad():
        for lyr in model.dec.layers:
            lyr.multihead_attn.out_proj.weight[:, :HD] = 0  # cross-attention head 0 dead
    tgt, mem = torch.randn(2, 6, E, dtype=torch.float64), torch.randn(2, 9, E, dtype=torch.float64)
    res = minimize(model, (tgt, mem))
    assert [n.op for n in res.original.nodes].count("scaled_dot_product_attention") == 4 * H
    t2, m2 = torch.randn(3, 6, E, dtype=torch.float64), torch.randn(3, 9, E, dtype=torch.float64)
    assert _rel(res.module(t2, m2), model(t2, m2)) <= 1e-10
    assert res.report.ops_after["scaled_dot_product_attention"] == 4 * H - 2
    assert _count(res.module) == _count(model) - 2 * (3 * HD * (E + 1) + E * HD)


class _PaddedEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        layer = nn.TransformerEncoderLayer(E, H, FF, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        return self.enc(x, src_key_padding_mask=pad)


def test_torch_encoder_with_key_padding_mask():
    """The key padding mask nn.MultiheadAttention repeats for every head is taken from before the repetition,
    so heads can go; constant value dims are not folded (a padded batch may mask a whole row)."""
    torch.manual_seed(0)
    model = _PaddedEncoder().eval().double()
    with torch.no_grad():
        for lyr in model.enc.layers:
            lyr.self_attn.in_proj_bias.normal_()
            lyr.self_attn.out_proj.weight[:, 2 * HD:3 * HD] = 0  # head 2 dead
            lyr.self_attn.in_proj_weight[2 * E + 3] = 0  # value dim 3 of head 0 constant
    x = torch.randn(2, 8, E, dtype=torch.float64)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[1, 5:] = True
    res = minimize(model, (x, pad))
    assert _head_widths(res) == [HD] * 6  # 3 heads per layer, no value dim folded
    x2 = torch.randn(3, 8, E, dtype=torch.float64)
    pad2 = torch.zeros(3, 8, dtype=torch.bool)
    pad2[0, 3:] = True
    assert _rel(res.module(x2, pad2), model(x2, pad2)) <= 1e-10
