"""A small pre-LN transformer whose MLP is an ELU-gated unit, `down(elu(gate(h)) * up(h))`, with dead
hidden units planted: `planted()` (and `example_inputs()`) for `sr-ir minimize model:planted`."""
import torch
import torch.nn.functional as F
from torch import nn

D, HEADS, FF, VOCAB, LAYERS, SEQ = 16, 2, 24, 32, 2, 6
ALPHA = 0.7

# planted dead units, per layer: gate rows zero, up rows zero, down columns zero
DEAD_GATE_ROWS = {0: [1, 4]}
DEAD_UP_ROWS = {0: [7]}
DEAD_DOWN_COLS = {1: [2, 9]}


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.h, self.hd = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, l, d = x.shape
        q, k, v = (p(x).view(b, l, self.h, self.hd).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(a.transpose(1, 2).reshape(b, l, d))


class EluGLU(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.gate = nn.Linear(d, f, bias=False)
        self.up = nn.Linear(d, f, bias=False)
        self.down = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down(F.elu(self.gate(x), ALPHA) * self.up(x))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, f: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.mlp = EluGLU(d, f)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class EluTransformer(nn.Module):
    def __init__(self, d=D, heads=HEADS, f=FF, vocab=VOCAB, layers=LAYERS, seq=SEQ):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d))
        self.blocks = nn.ModuleList(Block(d, heads, f) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


@torch.no_grad()
def plant(model: EluTransformer) -> EluTransformer:
    for i, blk in enumerate(model.blocks):
        blk.mlp.gate.weight[DEAD_GATE_ROWS.get(i, [])] = 0.0
        blk.mlp.up.weight[DEAD_UP_ROWS.get(i, [])] = 0.0
        blk.mlp.down.weight[:, DEAD_DOWN_COLS.get(i, [])] = 0.0
    return model


def planted(seed: int = 0) -> EluTransformer:
    torch.manual_seed(seed)
    return plant(EluTransformer()).double().eval()


def example_inputs():
    return (torch.randint(0, VOCAB, (2, SEQ)),)
