"""Models used by the lowering and emission tests (written here, as a user would write them)."""
from __future__ import annotations


import torch
from torch import nn
import torch.nn.functional as F


class PreLNEncoder(nn.Module):
    """A pre-LN transformer encoder: learned position embeddings, multi-head attention through
    scaled_dot_product_attention with hand-written q/k/v/o projections, GELU MLP."""

    def __init__(self, vocab: int = 50, seq: int = 12, dim: int = 32, heads: int = 4, depth: int = 2, classes: int = 5):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(seq, dim) * 0.02)
        self.heads = heads
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            b = nn.Module()
            b.ln1 = nn.LayerNorm(dim)
            b.q = nn.Linear(dim, dim)
            b.k = nn.Linear(dim, dim)
            b.v = nn.Linear(dim, dim)
            b.o = nn.Linear(dim, dim)
            b.ln2 = nn.LayerNorm(dim)
            b.fc1 = nn.Linear(dim, 4 * dim)
            b.fc2 = nn.Linear(4 * dim, dim)
            self.blocks.append(b)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def attention(self, b: nn.Module, x: torch.Tensor) -> torch.Tensor:
        n, s, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(n, s, h, d // h).transpose(1, 2)

        o = F.scaled_dot_product_attention(split(b.q(x)), split(b.k(x)), split(b.v(x)))
        return b.o(o.transpose(1, 2).reshape(n, s, d))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos
        for b in self.blocks:
            x = x + self.attention(b, b.ln1(x))
            x = x + b.fc2(F.gelu(b.fc1(b.ln2(x)), approximate="tanh"))
        return self.head(self.norm(x).mean(dim=1))


class UsesUnsupportedOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return torch.logcumsumexp(y, dim=1)  # logcumsumexp: not in the IR's op set
