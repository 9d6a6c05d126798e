"""Small transformer families written the way model libraries write them, for planting and minimization.

- `PreLNEncoder`: token + learned position embeddings, pre-LN blocks (x + attn(ln(x)), x + mlp(ln(x))),
  GELU MLP, final LayerNorm, linear head; optional key padding mask.
- `PostLNEncoder`: BERT-style, embedding LayerNorm, post-LN blocks (ln(x + attn(x)), ln(x + mlp(x))).
- `GPTDecoder`: pre-LN causal decoder with the output projection tied to the token embedding.
- `LlamaDecoder`: RMSNorm, rotary position embeddings (rotate-half), grouped-query attention (key/value
  heads repeated the `repeat_kv` way), SwiGLU MLP, no biases.

Attention is the hand-written form most libraries use: q/k/v projections, view to heads, transpose,
`F.scaled_dot_product_attention`, transpose back, reshape, output projection.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    vocab: int = 50
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # grouped-query attention when fewer than n_heads
    head_dim: int | None = None  # default d_model // n_heads
    d_ff: int = 64
    max_len: int = 16
    n_classes: int = 5  # encoders: classifier width
    eps: float = 1e-5
    rope_theta: float = 10000.0

    @property
    def hd(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections (grouped-query when n_kv < n_heads)."""

    def __init__(self, cfg: TransformerConfig, bias: bool = True, rope: bool = False):
        super().__init__()
        self.h, self.kv, self.hd = cfg.n_heads, cfg.kv_heads, cfg.hd
        if self.h % self.kv:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        self.q_proj = nn.Linear(cfg.d_model, self.h * self.hd, bias=bias)
        self.k_proj = nn.Linear(cfg.d_model, self.kv * self.hd, bias=bias)
        self.v_proj = nn.Linear(cfg.d_model, self.kv * self.hd, bias=bias)
        self.o_proj = nn.Linear(self.h * self.hd, cfg.d_model, bias=bias)
        self.rope = rope

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
        cos: torch.Tensor | None = None,
        sin: torch.Tensor | None = None,
    ) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        if self.rope:
            q = q * cos.unsqueeze(1) + rotate_half(q) * sin.unsqueeze(1)
            k = k * cos.unsqueeze(1) + rotate_half(k) * sin.unsqueeze(1)
        if self.kv != self.h:
            k = repeat_kv(k, self.h // self.kv)
            v = repeat_kv(v, self.h // self.kv)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, self.h * self.hd))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    b, kv, s, d = x.shape
    return x[:, :, None, :, :].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)


class MLP(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwiGLU(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.down_proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class PreLNBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask, causal)
        return x + self.mlp(self.ln2(x))


class PostLNBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn = SelfAttention(cfg)
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.mlp = MLP(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, mask))
        return self.ln2(x + self.mlp(x))


def _padding_mask(pad: torch.Tensor | None) -> torch.Tensor | None:
    """[B, S] bool (True = real token) -> [B, 1, 1, S] boolean attention mask."""
    return None if pad is None else pad[:, None, None, :]


class PreLNEncoder(nn.Module):
    """Pre-LN encoder classifier over the mean of the token states."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(PreLNBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, ids: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(pos)
        mask = _padding_mask(pad)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.head(self.ln_f(x).mean(1))


class PostLNEncoder(nn.Module):
    """BERT-style post-LN encoder; the classifier reads the first token."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.ln_emb = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.blocks = nn.ModuleList(PostLNBlock(cfg) for _ in range(cfg.n_layers))
        self.head = nn.Linear(cfg.d_model, cfg.n_classes)

    def forward(self, ids: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.ln_emb(self.tok(ids) + self.pos(pos))
        mask = _padding_mask(pad)
        for blk in self.blocks:
            x = blk(x, mask)
        return self.head(x[:, 0])


class GPTDecoder(nn.Module):
    """Pre-LN causal decoder; logits = ln_f(x) @ tok.weight^T (tied input/output embeddings)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.blocks = nn.ModuleList(PreLNBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok(ids) + self.pos(pos)
        for blk in self.blocks:
            x = blk(x, None, True)
        return F.linear(self.ln_f(x), self.tok.weight)


class RMSNorm(nn.Module):
    """RMSNorm written out the way model libraries do (pow, mean, rsqrt, two products), in the model's dtype."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.variance_epsilon))


class LlamaBlock(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.eps)
        self.attn = SelfAttention(cfg, bias=False, rope=True)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.eps)
        self.mlp = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.input_layernorm(x), None, True, cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaDecoder(nn.Module):
    """RMSNorm + RoPE + grouped-query attention + SwiGLU, causal; untied (or tied) output head."""

    def __init__(self, cfg: TransformerConfig, tie_embeddings: bool = False):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.blocks = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.eps)
        self.tie = tie_embeddings
        self.lm_head = None if tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab, bias=False)
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.hd, 2, dtype=torch.float32) / cfg.hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        freqs = pos[:, None].to(self.inv_freq.dtype) * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[None]  # [1, S, hd]
        cos, sin = emb.cos(), emb.sin()
        x = self.tok(ids)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        x = self.norm(x)
        return F.linear(x, self.tok.weight) if self.tie else self.lm_head(x)


FAMILIES = {
    "pre_ln": PreLNEncoder,
    "post_ln": PostLNEncoder,
    "gpt": GPTDecoder,
    "llama": LlamaDecoder,
}


def small_config(family: str, **overrides) -> TransformerConfig:
    """A small, fast configuration for each family (GQA with 2 key/value heads for llama)."""
    base = dict(vocab=40, d_model=32, n_layers=2, n_heads=4, d_ff=48, max_len=12, n_classes=5)
    if family == "llama":
        base.update(n_kv_heads=2, eps=1e-6)
    base.update(overrides)
    return TransformerConfig(**base)


def build(family: str, cfg: TransformerConfig | None = None, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """A freshly initialised model of `family` (one of FAMILIES) in eval mode."""
    if family not in FAMILIES:
        raise ValueError(f"unknown transformer family {family!r}; choose from {sorted(FAMILIES)}")
    torch.manual_seed(seed)
    model = FAMILIES[family](cfg or small_config(family))
    with torch.no_grad():  # non-trivial norm affine parameters, so that planted zeros matter
        for m in model.modules():
            if isinstance(m, (nn.LayerNorm, RMSNorm)):
                m.weight.normal_(1.0, 0.2)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0.0, 0.2)
    return model.to(dtype).eval()


def example_ids(cfg: TransformerConfig, batch: int = 2, seq: int | None = None, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab, (batch, seq or cfg.max_len), generator=g)
