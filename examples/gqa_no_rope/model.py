"""A small decoder with grouped-query attention and NO rotary embedding (learned absolute positions, as
in models that pair GQA/MQA with ALiBi-free absolute positions): key/value heads are repeated for their
query heads the way Hugging Face's `repeat_kv` writes it. Layer 0 has 2 key/value heads for 4 query
heads, layer 1 is multi-query (1 key/value head). Dead heads are planted (zero output-projection
columns): `planted()` (and `example_inputs()`) for `sr-ir minimize model:planted`."""
import torch
import torch.nn.functional as F
from torch import nn

D, HEADS, HD, FF, VOCAB, SEQ = 16, 4, 4, 32, 32, 6
KV_HEADS = [2, 1]  # per layer: grouped-query, then multi-query

# per layer: query heads whose output-projection columns are zero. In layer 0 heads 0 and 1 are the
# whole group of key/value head 0, so that key/value head is dead too.
DEAD_HEADS = {0: [0, 1, 3], 1: [2]}


def repeat_kv(x: torch.Tensor, r: int) -> torch.Tensor:
    b, g, s, d = x.shape
    if r == 1:
        return x
    return x[:, :, None, :, :].expand(b, g, r, s, d).reshape(b, g * r, s, d)


class GroupedAttention(nn.Module):
    def __init__(self, d: int, heads: int, kv_heads: int, hd: int):
        super().__init__()
        self.h, self.g, self.hd = heads, kv_heads, hd
        self.q = nn.Linear(d, heads * hd)
        self.k = nn.Linear(d, kv_heads * hd)
        self.v = nn.Linear(d, kv_heads * hd)
        self.o = nn.Linear(heads * hd, d)

    def forward(self, x):
        b, l, _ = x.shape
        q = self.q(x).view(b, l, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(b, l, self.g, self.hd).transpose(1, 2)
        v = self.v(x).view(b, l, self.g, self.hd).transpose(1, 2)
        r = self.h // self.g
        a = F.scaled_dot_product_attention(q, repeat_kv(k, r), repeat_kv(v, r), is_causal=True)
        return self.o(a.transpose(1, 2).reshape(b, l, self.h * self.hd))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, kv_heads: int, hd: int, f: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = GroupedAttention(d, heads, kv_heads, hd)
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class GQADecoder(nn.Module):
    def __init__(self, d=D, heads=HEADS, kv_heads=KV_HEADS, hd=HD, f=FF, vocab=VOCAB, seq=SEQ):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d))
        self.blocks = nn.ModuleList(Block(d, heads, g, hd, f) for g in kv_heads)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


@torch.no_grad()
def plant(model: GQADecoder) -> GQADecoder:
    for i, blk in enumerate(model.blocks):
        for h in DEAD_HEADS.get(i, []):
            blk.attn.o.weight[:, h * HD:(h + 1) * HD] = 0.0
    return model


def planted(seed: int = 0) -> GQADecoder:
    torch.manual_seed(seed)
    return plant(GQADecoder()).double().eval()


def example_inputs():
    return (torch.randint(0, VOCAB, (2, SEQ)),)
