"""Models written by others lower with attention raised to explicit heads and emit back exactly:
PyTorch's nn.TransformerEncoder and Hugging Face `transformers` architectures built from configs (random
weights, no download)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sr_ir.backend import emit
from sr_ir.frontend import lower

transformers = pytest.importorskip("transformers")


class LogitsOf(nn.Module):
    """Calls a Hugging Face model on input ids (no KV cache) and returns a plain tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.m = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.m(input_ids=ids, use_cache=False)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def hf_model(name: str) -> nn.Module:
    T = transformers
    kw = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
    torch.manual_seed(0)
    if name == "bert":
        m = T.BertModel(T.BertConfig(**kw, max_position_embeddings=32), add_pooling_layer=False)
    elif name == "gpt2":
        m = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                           bos_token_id=0, eos_token_id=0))
    elif name == "llama":
        m = T.LlamaForCausalLM(T.LlamaConfig(**kw, num_key_value_heads=2, max_position_embeddings=32))
    elif name == "roberta":
        m = T.RobertaModel(T.RobertaConfig(**kw, max_position_embeddings=40), add_pooling_layer=False)
    elif name == "qwen2":
        m = T.Qwen2ForCausalLM(T.Qwen2Config(**kw, num_key_value_heads=2, max_position_embeddings=32))
    else:
        raise KeyError(name)
    return LogitsOf(m).eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def _ops(p) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in p.nodes:
        out[n.op] = out.get(n.op, 0) + 1
    return out


@pytest.mark.parametrize("name,dtype", [("bert", torch.float64), ("gpt2", torch.float64), ("roberta", torch.float64),
                                        ("llama", torch.float32), ("qwen2", torch.float32)])
def test_hf_lower_raise_emit(name, dtype):
    model = hf_model(name).to(dtype)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))
    # the libraries build masks from the batch size: lower at static shapes
    prog = lower(model, (ids,), dynamic_batch=False)
    ops = _ops(prog)
    # 2 layers of 4 heads: one attention per head, no head views (permute, expand of the key/value
    # heads) left; RoBERTa's position ids are integer arithmetic on the input ids and stay
    assert ops.get("scaled_dot_product_attention") == 8 and "permute" not in ops
    assert not [n for n in prog.nodes if n.op == "expand" and n.type.dtype.startswith("f")]
    if name in ("llama", "qwen2"):
        assert ops.get("rms_norm") == 5
        assert ops.get("rope") == 2 * (4 + 2)  # per query head and per key/value head (2 groups of 2)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    assert _rel(emit(prog)(ids), model(ids)) <= tol


def test_hf_llama_float64_keeps_float32_norm_casts():
    """The Llama RMSNorm computes in float32 even in a float64 model: the casts are kept, the function is exact."""
    model = hf_model("llama").double()
    ids = torch.randint(0, 64, (2, 8))
    prog = lower(model, (ids,), dynamic_batch=False)
    assert _ops(prog).get("cast") == 10
    assert _rel(emit(prog)(ids), model(ids)) <= 1e-12


@pytest.mark.parametrize("batch_first,norm_first", [(True, False), (True, True), (False, False)])
def test_torch_transformer_encoder_raises_packed_attention(batch_first, norm_first):
    """nn.TransformerEncoder: the packed in_proj is read through a slice for each of q/k/v and the layout
    ops of nn.MultiheadAttention (sequence-first, unflatten, select, batch*heads views) become one
    attention per head (rules/raise/multihead.rules)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 48, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval().double()
    x = torch.randn(*((2, 8) if batch_first else (8, 2)), 32, dtype=torch.float64)
    prog = lower(model, (x,))
    ops = _ops(prog)
    # the packed projection read through slices, one attention per head
    assert ops.get("scaled_dot_product_attention") == 8 and "select" not in ops
    assert ops.get("slice") == 2 * (3 + 3 * 4)
    out = emit(prog)
    assert _rel(out(x), model(x)) <= 1e-12
    assert sum(p.numel() for p in out.parameters()) == sum(p.numel() for p in model.parameters())


def test_gpt2_gelu_new_is_raised():
    """GPT-2's GELU-new, written out as its tanh formula, becomes gelu(approximate="tanh")."""
    model = hf_model("gpt2").double()
    ids = torch.randint(0, 64, (2, 8))
    prog = lower(model, (ids,), dynamic_batch=False)
    gelus = [n for n in prog.nodes if n.op == "gelu"]
    assert len(gelus) == 2 and all(n.attrs["approximate"] == "tanh" for n in gelus)
    assert "tanh" not in _ops(prog)
    assert _rel(emit(prog)(ids), model(ids)) <= 1e-12
