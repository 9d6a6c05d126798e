"""A small pre-norm transformer with ScaleNorm (`g * x / max(||x||_2, eps)`, one scalar gain) in place of
LayerNorm, with removable residual-stream channels planted: `planted()` (and `example_inputs()`) for
`sr-ir minimize model:planted`."""
import torch
import torch.nn.functional as F
from torch import nn

D, HEADS, FF, VOCAB, LAYERS, SEQ = 16, 2, 32, 32, 2, 6

# stream channels that are exactly zero: the embedding and position columns are 0 and every writer of
# the stream (attention output projection, MLP down projection) has a zero row and zero bias there
ZERO_CHANNELS = [3, 10]
# a stream channel that holds a nonzero constant (the embedding column is CONST_VALUE everywhere, the
# writers write 0) and that no reader of a norm's output reads (zero columns in q/k/v, fc1 and the head):
# ScaleNorm must compensate it (s2 = CONST_VALUE^2)
CONST_CHANNELS = [6]
CONST_VALUE = 0.75


class ScaleNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.g = nn.Parameter(torch.tensor([d ** 0.5]))
        self.eps = eps

    def forward(self, x):
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(self.eps) * self.g


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


class Block(nn.Module):
    def __init__(self, d: int, heads: int, f: int):
        super().__init__()
        self.n1, self.n2 = ScaleNorm(d), ScaleNorm(d)
        self.attn = Attention(d, heads)
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        x = x + self.attn(self.n1(x))
        return x + self.fc2(F.gelu(self.fc1(self.n2(x))))


class ScaleNormTransformer(nn.Module):
    def __init__(self, d=D, heads=HEADS, f=FF, vocab=VOCAB, layers=LAYERS, seq=SEQ):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d))
        self.blocks = nn.ModuleList(Block(d, heads, f) for _ in range(layers))
        self.n_f = ScaleNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.tok(ids) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.n_f(x))


@torch.no_grad()
def plant(model: ScaleNormTransformer) -> ScaleNormTransformer:
    chans = ZERO_CHANNELS + CONST_CHANNELS
    model.tok.weight[:, ZERO_CHANNELS] = 0.0
    model.tok.weight[:, CONST_CHANNELS] = CONST_VALUE
    model.pos[:, chans] = 0.0
    for blk in model.blocks:
        for writer in (blk.attn.o, blk.fc2):
            writer.weight[chans, :] = 0.0
            writer.bias[chans] = 0.0
        for reader in (blk.attn.q, blk.attn.k, blk.attn.v, blk.fc1):
            reader.weight[:, CONST_CHANNELS] = 0.0
    model.head.weight[:, CONST_CHANNELS] = 0.0
    return model


def planted(seed: int = 0) -> ScaleNormTransformer:
    torch.manual_seed(seed)
    return plant(ScaleNormTransformer()).double().eval()


def example_inputs():
    return (torch.randint(0, VOCAB, (2, SEQ)),)
