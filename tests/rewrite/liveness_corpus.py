"""A corpus of small networks on which every library rule fires (tests/rewrite/test_liveness_corpus.py).

`CASES` maps a case name to a builder returning `(model, example_inputs)`: an nn.Module in float64 and
eval mode. Three are modules emitted by sr-ir, for patterns torch.export does not give at a dynamic
batch: compensated norms (a program parsed from IR text, as an earlier minimization leaves it) and two
models lowered at a static batch; `sr_ir.lower` reads an emitted module back from its program. Every
weight is drawn from a seeded generator, then structure is planted on purpose:

- dead rows/filters whose biases are nonzero, non-trivial constants (0.7, -1.3, ...), so that a wrong
  constant fold changes the output; zero rows with a zero bias where a rule needs an exact zero;
- dead units (every reader's columns zero) and unused inputs, so that drop rules run end to end;
- randomized BatchNorm running statistics and non-default eps values for every norm;
- constants always reach the output: the channel a rule folds is read downstream with nonzero weights
  (and stays on the live side of any relu after it).

`FIRES` maps every library rule to one case where it fires (`rule in report.rules_used`), the fastest
such case. `UNREACHABLE` lists rules that no model can fire, `NOTES` rules that fire only in special
circumstances, with the reasons.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

DT = torch.float64
L = 5  # token sequence length of the sequence cases


# ---- helpers -------------------------------------------------------------------------------------
def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def _init(model: nn.Module, g: torch.Generator) -> nn.Module:
    """Every parameter and BatchNorm statistic drawn from `g`: weights ~ N(0, 1/fan_in), biases and
    other vectors ~ N(0, 0.5^2), norm gains ~ N(1, 0.3^2), running variances in [0.5, 1.5)."""
    model = model.to(DT)
    norms = (nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d, _RMSNorm)
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g, dtype=DT) / math.sqrt(fan_in))
            elif isinstance(m, norms) and name == "weight":
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=DT))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=DT))
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g, dtype=DT))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g, dtype=DT))
    return model


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=DT)


def _gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GELU with tanh written out, as GPT-2's gelu_new does (raised by raise.gelu_tanh)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class _RMSNorm(nn.Module):
    """RMSNorm written out the way model libraries do; `weight_last` writes the gain on the right."""

    def __init__(self, d: int, eps: float, weight_last: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps
        self.weight_last = weight_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        if self.weight_last:
            return (x * torch.rsqrt(var + self.eps)) * self.weight
        return self.weight * (x * torch.rsqrt(var + self.eps))


@torch.no_grad()
def _dead_row(layer: nn.Module, rows: dict[int, float | None]) -> None:
    """Zero the rows (output channels / filters) of a linear or conv; their biases become the constants."""
    for r, k in rows.items():
        layer.weight[r] = 0
        if k is not None:
            layer.bias[r] = k


# ---- dense [B, n]: arithmetic -----------------------------------------------------------------------
class DenseArith(nn.Module):
    """Three pairs of linears combined by sub (plus a bias vector), mul (times a scale on the right) and
    add (times a scale on the left), concatenated. Each pair is read by its own op only, so that a channel
    the op's result no longer needs can leave both linears.

    Channel 0 of every linear is constant (0.7 on the left, -1.3 on the right): every combination of it
    is a folded constant. Channel 1 of `fc` and channel 2 of `fd` are exact zeros (mul.zero_left /
    zero_right); scale[3] and scale_left[4] are zero; channel 5 is a dead unit; input feature 9 is read
    by no one."""

    def __init__(self):
        super().__init__()
        self.fa, self.fb = nn.Linear(10, 8), nn.Linear(10, 8)
        self.fc, self.fd = nn.Linear(10, 8), nn.Linear(10, 8)
        self.fe, self.ff = nn.Linear(10, 8), nn.Linear(10, 8)
        self.bias_vec = nn.Parameter(torch.zeros(8))
        self.scale = nn.Parameter(torch.zeros(8))
        self.scale_left = nn.Parameter(torch.zeros(8))
        self.out = nn.Linear(24, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (self.fa(x) - self.fb(x)) + self.bias_vec
        p = (self.fc(x) * self.fd(x)) * self.scale
        q = self.scale_left * (self.fe(x) + self.ff(x))
        return self.out(torch.cat([d, p, q], 1))


def dense_arith():
    g = _gen(1)
    m = _init(DenseArith(), g)
    with torch.no_grad():
        for left, right in ((m.fa, m.fb), (m.fc, m.fd), (m.fe, m.ff)):
            _dead_row(left, {0: 0.7})
            _dead_row(right, {0: -1.3})
        _dead_row(m.fc, {1: 0.0})
        _dead_row(m.fd, {2: 0.0})
        for lyr in (m.fa, m.fb, m.fc, m.fd, m.fe, m.ff):
            lyr.weight[:, 9] = 0
        m.scale[3] = 0
        m.scale_left[4] = 0
        m.out.weight[:, [5, 13, 21]] = 0
    return m.eval(), (_randn(g, 4, 10),)


# ---- dense [B, n]: activations ---------------------------------------------------------------------
class DenseAct(nn.Module):
    """One linear read by relu, silu, tanh, sigmoid, gelu, GPT-2's written-out gelu_new, relu6, a
    hardtanh with its own bounds, hardswish and hardsigmoid."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.out = nn.Linear(80, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        parts = [torch.relu(h), F.silu(h), torch.tanh(h), torch.sigmoid(h), F.gelu(h), _gelu_new(h),
                 F.relu6(h), F.hardtanh(h, -0.5, 2.0), F.hardswish(h), F.hardsigmoid(h)]
        return self.out(torch.cat(parts, 1))


def dense_act():
    g = _gen(2)
    m = _init(DenseAct(), g)
    with torch.no_grad():
        _dead_row(m.fc, {0: 0.7, 1: -1.3})
        m.out.weight[:, [4 + 8 * i for i in range(10)]] = 0  # unit 4 is dead
    return m.eval(), (_randn(g, 4, 6),)


# ---- dense [B, n]: layers without bias, BatchNorm1d folds ------------------------------------------
class DenseNoBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.la = nn.Linear(6, 8)
        self.lb = nn.Linear(6, 8)
        self.n1 = nn.Linear(8, 8, bias=False)
        self.n2 = nn.Linear(8, 8, bias=False)
        self.n3 = nn.Linear(6, 8, bias=False)
        self.m1 = nn.Linear(6, 8, bias=False)
        self.bn1 = nn.BatchNorm1d(8, eps=1e-3)
        self.m2 = nn.Linear(6, 8)
        self.bn2 = nn.BatchNorm1d(8, eps=2e-3)
        self.head = nn.Linear(40, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ga = torch.relu(self.la(x))
        gb = torch.relu(self.lb(x))
        h1 = self.n1(ga)
        h2 = self.n2(gb)
        h3 = self.n3(x)
        u = self.bn1(self.m1(x))
        v = self.bn2(self.m2(x))
        return self.head(torch.cat([h1, h2, h3, u, v], 1))


def dense_nobias():
    """ga[1] is relu(-1.3) = 0 (fold_zero_nobias into n1), gb[2] is 0.7 (fold_const_nobias into n2);
    n1 row 4 is zero (dead_row_nobias, read by the head); n3 unit 6 is dead (drop_row_nobias); input
    feature 5 is read by no one (n3: unused_col_nobias)."""
    g = _gen(3)
    m = _init(DenseNoBias(), g)
    with torch.no_grad():
        _dead_row(m.la, {1: -1.3})
        _dead_row(m.lb, {2: 0.7})
        m.n1.weight[4] = 0
        for lyr in (m.la, m.lb, m.n3, m.m1, m.m2):
            lyr.weight[:, 5] = 0
        m.head.weight[:, 16 + 6] = 0
    return m.eval(), (_randn(g, 4, 6),)


# ---- dense [B, n]: LayerNorm and RMSNorm across constant channels -----------------------------------
class DenseNorms(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.ln = nn.LayerNorm(8, eps=1e-3)
        self.rms = _RMSNorm(8, eps=2e-3)
        self.rms_last = _RMSNorm(8, eps=3e-3, weight_last=True)
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return self.head(torch.cat([self.ln(h), self.rms(h), self.rms_last(h)], 1))


def dense_norms():
    """Stream channels 1 and 4 hold 0.7 and -1.3 and every norm's gain is zero there: the norms are
    compensated (compensate, then compose); LayerNorm gain 6 and RMSNorm gain 3 are zero on live inputs."""
    g = _gen(4)
    m = _init(DenseNorms(), g)
    with torch.no_grad():
        _dead_row(m.fc, {1: 0.7, 4: -1.3})
        for n in (m.ln, m.rms, m.rms_last):
            n.weight[[1, 4]] = 0
        m.ln.weight[6] = 0
        m.rms.weight[3] = 0
    return m.eval(), (_randn(g, 4, 6),)


# ---- tokens [B, L, n]: embeddings, positions, layout ----------------------------------------------
class Tokens(nn.Module):
    """Token embeddings plus two position tables, sequence-first and back, merged to [L*B, n] and split,
    sliced, concatenated with a second (unread) embedding, read at token 0 and averaged over tokens."""

    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(20, 8)
        self.tok2 = nn.Embedding(20, 3)
        self.pos = nn.Parameter(torch.zeros(L, 8))
        self.pos_unit = nn.Parameter(torch.zeros(1, L, 8))
        self.head_cls = nn.Linear(9, 3)
        self.head_avg = nn.Linear(9, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos
        x = x + self.pos_unit
        t = x.transpose(0, 1)  # [L, B, n]
        f = torch.relu(t.reshape(-1, 8))  # [L*B, n]
        t = f.reshape(L, -1, 8).transpose(0, 1)  # [B, L, n]
        c = torch.cat([t[..., 1:7], self.tok2(ids)], -1)
        return self.head_cls(c[:, 0]) + self.head_avg(c.mean(1))


def tokens():
    """Stream channel 2 is constant (embedding column 0.7, position columns -1.3 and 0.4): it passes
    every layout op to both heads. Channel 5 is dead; channels 0 and 7 are outside the slice; the second
    embedding's columns are read by no head (its whole operand of the concat goes)."""
    g = _gen(5)
    m = _init(Tokens(), g)
    with torch.no_grad():
        m.tok.weight[:, 2] = 0.7
        m.pos[:, 2] = -1.3
        m.pos_unit[:, :, 2] = 0.4
        for h in (m.head_cls, m.head_avg):
            h.weight[:, 4] = 0  # stream channel 5 (slice position 4)
            h.weight[:, 6:] = 0  # the second embedding
    ids = torch.randint(0, 20, (3, L), generator=g)
    return m.eval(), (ids,)


# ---- feature maps [B, C, H, W]: elementwise ops and concat --------------------------------------------
class MapsElementwise(nn.Module):
    """Two 1x1 convs combined by add, sub and mul, through every activation, concatenated on channels,
    averaged over space."""

    def __init__(self):
        super().__init__()
        self.ca = nn.Conv2d(3, 6, 1)
        self.cb = nn.Conv2d(3, 6, 1)
        self.head = nn.Linear(60, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.ca(x), self.cb(x)
        s, d = a + b, a - b
        parts = [torch.relu(s), F.silu(s), torch.tanh(d), torch.sigmoid(d), F.gelu(s), a * b,
                 F.relu6(s), F.hardtanh(d, -0.5, 2.0), F.hardswish(s), F.hardsigmoid(d)]
        return self.head(torch.cat(parts, 1).mean((2, 3)))


def maps_elementwise():
    """Filter 0 of both convs is dead (0.7 and -1.3): its sum and difference are constant maps through
    every activation (their product has no constant rule: the head does not read it). Channel 5 is a dead
    unit."""
    g = _gen(6)
    m = _init(MapsElementwise(), g)
    with torch.no_grad():
        _dead_row(m.ca, {0: 0.7})
        _dead_row(m.cb, {0: -1.3})
        m.head.weight[:, [5 + 6 * i for i in range(10)]] = 0
        m.head.weight[:, 30] = 0  # channel 0 of the product
    return m.eval(), (_randn(g, 2, 3, 5, 5),)


# ---- feature maps: squeeze-excitation gates ---------------------------------------------------------
class MapsGated(nn.Module):
    """Two squeeze-excitation gates, one written `gate * x` (torchvision) and one `x * gate` (timm): a
    per-sample channel scale [b, c, 1, 1] broadcast over the maps."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.se1 = nn.Conv2d(6, 4, 1)
        self.se2 = nn.Conv2d(4, 6, 1)
        self.proj = nn.Conv2d(12, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.se2(torch.relu(self.se1(h.mean((2, 3), keepdim=True)))))
        return self.proj(torch.cat([gate * h, h * gate], 1))


def maps_gated():
    """Filter 2 of `conv` is a zero channel (relu 0): gated, it stays 0 on both sides, so the gate's
    channel 2 and the SE's reading of it go with it."""
    g = _gen(17)
    m = _init(MapsGated(), g)
    with torch.no_grad():
        _dead_row(m.conv, {2: 0.0})
    return m.eval(), (_randn(g, 2, 3, 5, 5),)


# ---- constant padding: maps, channels-last windows, an appended column of ones, slices --------------
class PadsMaps(nn.Module):
    """Spatial padding of conv maps, a column of ones appended to the last axis (EfficientViT's values),
    a pad by zeros and a cropping pad of channels-last windows (Swin's)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(self.conv(x), (1, 2, 0, 1))
        z = F.pad(y.permute(0, 2, 3, 1), (0, 1), value=1.0)
        z = F.pad(z, (0, 0, -1, 0, 1, 1))
        return self.fc(z[..., :4])


def pads_maps():
    """Conv filter 2 is a zero channel: it passes the zero padding, the permute, the ones column and the
    crop, and both layers lose it."""
    g = _gen(18)
    m = _init(PadsMaps(), g)
    with torch.no_grad():
        _dead_row(m.conv, {2: 0.0})
    return m.eval(), (_randn(g, 2, 3, 8, 8),)


class PadsLast(nn.Module):
    """A channels-last [b, w, n] padded along w, read whole and sliced; padded conv maps sliced on
    their channels."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.whole = nn.Linear(4, 3)
        self.part = nn.Linear(2, 3)
        self.conv = nn.Conv2d(3, 4, 1)
        self.maps = nn.Linear(2, 3)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(t)
        u, w = F.pad(h, (0, 0, 1, 1)), F.pad(h, (0, 0, 2, 0))[..., 1:3]
        v = F.pad(self.conv(x), (1, 1, 1, 1))[:, 1:3]
        return self.whole(u.mean(1)) + self.part(w.mean(1)) + self.maps(v.mean((2, 3)))


def pads_last():
    """Unit 1 of `lin` is a zero channel through the pad (the whole read loses it, the slice keeps the
    pad over the sliced channels); the conv's maps are padded, then sliced on channels."""
    g = _gen(19)
    m = _init(PadsLast(), g)
    with torch.no_grad():
        _dead_row(m.lin, {1: 0.0})
    return m.eval(), (_randn(g, 2, 3, 3), _randn(g, 2, 3, 4, 4))


# ---- feature maps: convs with biases, depthwise convs, BatchNorm2d ------------------------------------
class ConvBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3)
        self.dw = nn.Conv2d(6, 6, 3, groups=6)
        self.bn = nn.BatchNorm2d(6, eps=1e-3)
        self.bn2 = nn.BatchNorm2d(6, eps=2e-3)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))
        u = torch.relu(self.c2(h))
        v = self.bn(self.dw(u))  # folded into the depthwise conv
        w = self.bn2(torch.relu(v))
        return self.head(w.mean((2, 3)))


def conv_bias():
    """c1: filter 0 dead (0.7, folded by the unpadded c2), filter 1 dead with bias 0 (a zero channel).
    c2: filter 2 dead (0.4: depthwise_const), filter 4 dead (-0.9, relu 0: depthwise_zero). dw: filter 1
    zero (its bias). Unit 3 is dead after the depthwise conv."""
    g = _gen(7)
    m = _init(ConvBias(), g)
    with torch.no_grad():
        _dead_row(m.c1, {0: 0.7, 1: 0.0})
        _dead_row(m.c2, {2: 0.4, 4: -0.9})
        m.dw.weight[1] = 0
        # channels 2 and 4 come out of the depthwise conv and its BatchNorm positive: the relu after
        # them passes their constants (and any change of them) on
        m.dw.weight[2].abs_()
        for c in (2, 4):
            m.dw.bias[c], m.bn.running_mean[c], m.bn.weight[c], m.bn.bias[c] = 0.6, -0.5, 1.1, 0.2
        m.head.weight[:, 3] = 0
    return m.eval(), (_randn(g, 2, 3, 7, 7),)


# ---- feature maps: convs without bias ---------------------------------------------------------------
class ConvNoBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.n1 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.dwn = nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=False)
        self.cn = nn.Conv2d(6, 4, 1, bias=False)
        self.bnn = nn.BatchNorm2d(4, eps=1e-3)
        self.n2 = nn.Conv2d(6, 4, 1, bias=False)
        self.head = nn.Linear(14, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.relu(self.a(x))
        u = self.dwn(torch.relu(self.n1(g)))
        w = self.bnn(self.cn(g))  # folded: cn gets a bias
        z = self.n2(g)
        return self.head(torch.cat([u, w, z], 1).mean((2, 3)))


def conv_nobias():
    """g = relu(a(x)): channel 0 is 0.7 (not read by the padded n1, folded by cn and by the unpadded n2,
    which gets a bias), channel 1 is 0 (fold_zero_nobias into n1 and n2), channel 4 is read by no one.
    n2: filter 3 zero (a zero channel the head reads). Unit 5 is dead after the depthwise conv."""
    g = _gen(8)
    m = _init(ConvNoBias(), g)
    with torch.no_grad():
        _dead_row(m.a, {0: 0.7, 1: -1.3})
        for c in (m.n1, m.cn, m.n2):
            c.weight[:, 4] = 0
        m.n1.weight[:, 0] = 0
        m.n2.weight[3] = 0
        m.head.weight[:, 5] = 0
    return m.eval(), (_randn(g, 2, 3, 6, 6),)


# ---- rank-3 maps [b, n, l]: conv1d, with and without bias, and a zero-padded branch ---------------------
class Conv1dBias(nn.Module):
    """conv_bias's stack over one spatial axis (Whisper's stem is conv1d), ending in a 1-wide conv head;
    a branch pads h explicitly by zeros (F.pad: a pad1d of [b, n, l]) before an unpadded conv."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 6, 3, padding=1)
        self.c2 = nn.Conv1d(6, 6, 3)
        self.dw = nn.Conv1d(6, 6, 3, groups=6)
        self.head = nn.Conv1d(6, 3, 1)
        self.side = nn.Conv1d(6, 3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c1(x))  # [B, 6, 9]
        u = torch.relu(self.c2(h))
        v = torch.relu(self.dw(u))  # [B, 6, 5]
        return self.head(v) + self.side(F.pad(h, (1, 1)))


def conv1d_bias():
    """c1: filter 0 dead (0.7, folded by the unpadded c2; the padded branch does not read it), filter 1
    dead with bias 0 (a zero channel: folded by c2, and through the zero padding by `side`). c2: filter 2
    dead (0.4: depthwise_const), filter 4 dead (-0.9, relu 0: depthwise_zero). dw: filter 1 zero (its
    bias). Unit 3 is dead after the depthwise conv (the head does not read it)."""
    g = _gen(21)
    m = _init(Conv1dBias(), g)
    with torch.no_grad():
        _dead_row(m.c1, {0: 0.7, 1: 0.0})
        _dead_row(m.c2, {2: 0.4, 4: -0.9})
        m.dw.weight[1] = 0
        # channels 1, 2 and 4 come out of the depthwise conv positive: the relu passes their constants
        m.dw.weight[2].abs_()
        for c in (1, 2, 4):
            m.dw.bias[c] = 0.6
        m.side.weight[:, 0] = 0
        m.head.weight[:, 3] = 0
    return m.eval(), (_randn(g, 2, 3, 9),)


class Conv1dNoBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(3, 6, 3, padding=1)
        self.n1 = nn.Conv1d(6, 6, 3, padding=1, bias=False)
        self.dwn = nn.Conv1d(6, 6, 3, padding=1, groups=6, bias=False)
        self.n2 = nn.Conv1d(6, 4, 1, bias=False)
        self.head = nn.Conv1d(10, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.relu(self.a(x))
        u = self.dwn(torch.relu(self.n1(g)))
        return self.head(torch.cat([u, self.n2(g)], 1))


def conv1d_nobias():
    """conv_nobias over one axis. g = relu(a(x)): channel 0 is 0.7 (not read by the padded n1, folded by
    the unpadded n2, which gets a bias), channel 1 is 0 (fold_zero_nobias into n1 and n2), channel 4 is
    read by no one. n2: filter 3 zero (a zero channel the head folds). Unit 5 is dead after the depthwise conv."""
    g = _gen(22)
    m = _init(Conv1dNoBias(), g)
    with torch.no_grad():
        _dead_row(m.a, {0: 0.7, 1: -1.3})
        for c in (m.n1, m.n2):
            c.weight[:, 4] = 0
        m.n1.weight[:, 0] = 0
        m.n2.weight[3] = 0
        m.head.weight[:, 5] = 0
    return m.eval(), (_randn(g, 2, 3, 6),)


# ---- feature maps: pooling, means, flatten ----------------------------------------------------------
class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 5, 3, padding=1)
        self.head = nn.Linear(5 * (4 + 4 + 9 + 4 + 1 + 1), 3)
        self.seq_head = nn.Linear(20, 3)
        self.register_buffer("order", torch.tensor([3, 0, 2, 1]))

    def forward(self, x: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)  # [B, 5, 6, 6]
        parts = [
            F.max_pool2d(h, 3),
            F.avg_pool2d(h, 3),
            F.avg_pool2d(h, 3, stride=2, padding=1, count_include_pad=False),
            F.adaptive_avg_pool2d(h, (2, 2)),
        ]
        flat = [torch.flatten(p, 1) for p in parts]
        feats = torch.cat(flat + [h.mean((2, 3)), h.mean((-2, -1))], 1)
        seq = torch.index_select(seq, 1, self.order)  # a gather on axis 1 of [B, 4, 5]
        return self.head(feats) + self.seq_head(torch.flatten(seq, 1))


def pools():
    """Conv filter 0 is dead (0.7) and filter 1 (-1.3): constant through every pooling, mean and flatten.
    Channel 3 is a dead unit (every block of head columns it feeds is zero). The [B, 4, 5] sequence
    input is reordered on axis 1 (index_select) and flattened; the block of its channel 2 is read by no
    one. (The engine reads every static axis of a network input through a gather of its own, so it can
    drop a channel of a rank-3 input only through a gather over axis 1 in the model.)"""
    g = _gen(9)
    m = _init(Pools(), g)
    with torch.no_grad():
        _dead_row(m.conv, {0: 0.7, 1: -1.3})
        col = 0
        for size in (4, 4, 9, 4, 1, 1):
            m.head.weight[:, col + 3 * size: col + 4 * size] = 0
            col += 5 * size
        m.seq_head.weight[:, 10:15] = 0
    return m.eval(), (_randn(g, 2, 2, 6, 6), _randn(g, 2, 4, 5))


# ---- feature maps: permutes to channels-last, channels-first LayerNorm, unflatten ---------------------
class MapsLayout(nn.Module):
    """A conv, a channels-first LayerNorm written as permute / LayerNorm / permute (ConvNeXt), a linear
    over channels-last maps between two permutes, a 1x1 conv; then a linear unflattened to maps."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.ln = nn.LayerNorm(6, eps=1e-3)
        self.pw = nn.Linear(6, 6)
        self.conv2 = nn.Conv2d(6, 4, 1)
        self.fcu = nn.Linear(4, 4 * 3 * 3)
        self.conv3 = nn.Conv2d(4, 3, 1)
        self.head = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        u = self.pw(h.permute(0, 2, 3, 1))
        w = self.conv2(u.permute(0, 3, 1, 2))
        z = self.fcu(w.mean((2, 3))).view(-1, 4, 3, 3)
        return self.head(self.conv3(z).mean((2, 3)))


def maps_layout():
    """Conv filters 0 and 1 are dead (0.7, -1.3) and the LayerNorm's gain is zero on them (compensated);
    gain 3 is zero on a live channel (its bias passes the permute to the pointwise linear). pw: row 2 dead
    (0.4, back through the permute to conv2), unit 4 dead. fcu: the rows of unflattened channel 1 are
    zero with bias 0.7 everywhere (a constant map folded by conv3); channel 2's rows are read by no one."""
    g = _gen(10)
    m = _init(MapsLayout(), g)
    with torch.no_grad():
        _dead_row(m.conv, {0: 0.7, 1: -1.3})
        m.ln.weight[[0, 1, 3]] = 0
        _dead_row(m.pw, {2: 0.4})
        m.conv2.weight[:, 4] = 0
        m.fcu.weight[9:18] = 0
        m.fcu.bias[9:18] = 0.7
        m.conv3.weight[:, 2] = 0
    return m.eval(), (_randn(g, 2, 3, 5, 5),)


# ---- attention ----------------------------------------------------------------------------------
class _Attention(nn.Module):
    """Multi-head self-attention as model libraries write it (q/k/v projections viewed to heads and
    transposed, optional rotate-half RoPE and repeat_kv grouped-query heads, F.scaled_dot_product_attention,
    transposed back, output projection)."""

    def __init__(self, d: int, heads: int, kv_heads: int, hd: int, bias: bool = True, rope: bool = False,
                 rotary: int = 0, scale_query: bool = False):
        super().__init__()
        self.h, self.kv, self.hd, self.rope = heads, kv_heads, hd, rope
        self.rd = rotary or hd  # rotary < hd: each head rotates only its first `rotary` dims (Phi)
        self.scale_query = scale_query  # scale the query projection before the heads split (OPT, Whisper)
        self.q_proj = nn.Linear(d, heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(d, kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(heads * hd, d, bias=bias)
        inv_freq = 1.0 / (10000.0 ** (torch.arange(0, self.rd, 2, dtype=torch.float32) / self.rd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @staticmethod
    def _rotate_half(x: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x)
        if self.scale_query:
            q = q * self.hd ** -0.5
        q = q.view(b, s, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        if self.rope:
            pos = torch.arange(s, device=x.device)
            freqs = pos[:, None].to(self.inv_freq.dtype) * self.inv_freq[None, :]
            emb = torch.cat((freqs, freqs), dim=-1)[None].to(x.dtype)
            cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
            if self.rd < self.hd:  # rotate the first rd dims, pass the rest (as Phi writes it)
                qr, qp, kr, kp = q[..., :self.rd], q[..., self.rd:], k[..., :self.rd], k[..., self.rd:]
                q = torch.cat((qr * cos + self._rotate_half(qr) * sin, qp), -1)
                k = torch.cat((kr * cos + self._rotate_half(kr) * sin, kp), -1)
            else:
                q = q * cos + self._rotate_half(q) * sin
                k = k * cos + self._rotate_half(k) * sin
        if self.kv != self.h:
            r = self.h // self.kv
            k = k[:, :, None].expand(b, self.kv, r, s, self.hd).reshape(b, self.h, s, self.hd)
            v = v[:, :, None].expand(b, self.kv, r, s, self.hd).reshape(b, self.h, s, self.hd)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0 if self.scale_query else None)
        return self.o_proj(o.transpose(1, 2).reshape(b, s, self.h * self.hd))


def _band_mask() -> torch.Tensor:
    """[1, 1, L, L] boolean: query i sees keys i-1 .. i+1 (every row keeps a key)."""
    i = torch.arange(L)
    return ((i[:, None] - i[None, :]).abs() <= 1)[None, None]


class Attention(nn.Module):
    """Two attentions over the same tokens, one without a mask, one with a constant boolean mask."""

    def __init__(self):
        super().__init__()
        self.plain = _Attention(8, 2, 2, 4)
        self.masked = _Attention(8, 2, 2, 4)
        self.register_buffer("mask", _band_mask())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.plain(x), self.masked(x, self.mask)], -1))


def attention():
    """In both attentions (head dim 4): query dim 1 of head 0 is zero (row and bias), key dim 2 of head 0
    is zero, key dim 0 of head 1 is the constant 0.7 (softmax does not see it), value dim 1 of head 1 is
    the constant -1.3 (folded into the output projection's bias), value dim 3 of head 0 is read by no one."""
    g = _gen(11)
    m = _init(Attention(), g)
    with torch.no_grad():
        for a in (m.plain, m.masked):
            _dead_row(a.q_proj, {1: 0.0})
            _dead_row(a.k_proj, {2: 0.0, 4: 0.7})
            _dead_row(a.v_proj, {5: -1.3})
            a.o_proj.weight[:, 3] = 0
    return m.eval(), (_randn(g, 2, L, 8),)


class AttentionRope(nn.Module):
    """Llama-style attention (no biases, RoPE, 4 query heads over 2 key/value heads), without and with a
    constant mask."""

    def __init__(self):
        super().__init__()
        self.plain = _Attention(8, 4, 2, 4, bias=False, rope=True)
        self.masked = _Attention(8, 4, 2, 4, bias=False, rope=True)
        self.register_buffer("mask", _band_mask())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.plain(x), self.masked(x, self.mask)], -1))


def attention_rope():
    """The key rows of rotation pair (1, 3) of key/value head 0 are zero: that pair leaves the keys and
    the queries of both heads of group 0. The query rows of pair (0, 2) of query head 2 are zero: a zero
    query pair (unlike a key pair, which any constant would let go) goes only because it is zero. Query
    head 3 is dead (its output projection columns are zero)."""
    g = _gen(12)
    m = _init(AttentionRope(), g)
    with torch.no_grad():
        for a in (m.plain, m.masked):
            a.k_proj.weight[[1, 3]] = 0
            a.q_proj.weight[[8, 10]] = 0
            a.o_proj.weight[:, 12:16] = 0
    return m.eval(), (_randn(g, 2, L, 8),)


class AttentionRopeMHA(nn.Module):
    """RoPE attention with one key/value head per query head (no repeat_kv), without and with a mask."""

    def __init__(self):
        super().__init__()
        self.plain = _Attention(8, 2, 2, 4, bias=False, rope=True)
        self.masked = _Attention(8, 2, 2, 4, bias=False, rope=True)
        self.register_buffer("mask", _band_mask())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.plain(x), self.masked(x, self.mask)], -1))


def attention_rope_mha():
    """Head 1 is dead (its output projection columns are zero); the query rows of pair (0, 2) of head 0
    are zero."""
    g = _gen(14)
    m = _init(AttentionRopeMHA(), g)
    with torch.no_grad():
        for a in (m.plain, m.masked):
            a.q_proj.weight[[0, 2]] = 0
            a.o_proj.weight[:, 4:8] = 0
    return m.eval(), (_randn(g, 2, L, 8),)


class AttentionVariant(nn.Module):
    """Two attentions of one variant (`kw` for _Attention) over the same tokens, without and with a mask."""

    def __init__(self, **kw: Any):
        super().__init__()
        self.plain = _Attention(8, 2, 2, 4, **kw)
        self.masked = _Attention(8, 2, 2, 4, **kw)
        self.register_buffer("mask", _band_mask())
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.plain(x), self.masked(x, self.mask)], -1))


def attention_scaled_query():
    """OPT-style attention, the query projection scaled before the heads split: head 1 is dead (its
    value rows and bias are zero), so its query, key and value rows and output columns all go."""
    g = _gen(23)
    m = _init(AttentionVariant(scale_query=True), g)
    with torch.no_grad():
        for a in (m.plain, m.masked):
            _dead_row(a.v_proj, {r: 0.0 for r in range(4, 8)})
    return m.eval(), (_randn(g, 2, L, 8),)


def attention_partial_rope():
    """Phi-style partial rotary embedding (each head rotates its first 2 of 4 dims): head 1 is dead (its
    output projection columns are zero)."""
    g = _gen(24)
    m = _init(AttentionVariant(bias=False, rope=True, rotary=2), g)
    with torch.no_grad():
        for a in (m.plain, m.masked):
            a.o_proj.weight[:, 4:8] = 0
    return m.eval(), (_randn(g, 2, L, 8),)


class PackedAttention(nn.Module):
    """GPT-NeoX-style attention: one linear packs each head's q, k and v ([b, l, h, 3 * hd]), the first
    `rotary` dims of each query and key head rotate, a constant mask."""

    def __init__(self, d: int = 8, heads: int = 2, hd: int = 4, rotary: int = 2):
        super().__init__()
        self.h, self.hd, self.rd = heads, hd, rotary
        self.qkv = nn.Linear(d, heads * 3 * hd)
        self.o_proj = nn.Linear(heads * hd, d)
        self.head = nn.Linear(d, 3)
        self.register_buffer("inv_freq", 1.0 / (10000.0 ** (torch.arange(0, rotary, 2, dtype=torch.float32) / rotary)),
                             persistent=False)
        self.register_buffer("mask", _band_mask())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        t = self.qkv(x).view(b, s, self.h, 3 * self.hd).transpose(1, 2)
        q, k, v = t[..., :self.hd], t[..., self.hd:2 * self.hd], t[..., 2 * self.hd:]
        freqs = torch.arange(s, device=x.device)[:, None].to(self.inv_freq.dtype) * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)[None].to(x.dtype)
        cos, sin = emb.cos().unsqueeze(1), emb.sin().unsqueeze(1)
        qr, qp, kr, kp = q[..., :self.rd], q[..., self.rd:], k[..., :self.rd], k[..., self.rd:]
        q = torch.cat((qr * cos + _Attention._rotate_half(qr) * sin, qp), -1)
        k = torch.cat((kr * cos + _Attention._rotate_half(kr) * sin, kp), -1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        return self.head(self.o_proj(o.transpose(1, 2).reshape(b, s, self.h * self.hd)))


def attention_packed():
    """Head 1's value rows and bias of the packed projection are zero: its whole block of q, k and v
    rows and its output projection columns go."""
    g = _gen(25)
    m = _init(PackedAttention(), g)
    with torch.no_grad():
        _dead_row(m.qkv, {r: 0.0 for r in range(12 + 8, 24)})
    return m.eval(), (_randn(g, 2, L, 8),)


class MultiHead(nn.Module):
    """nn.MultiheadAttention three ways: need_weights=False, with a key padding mask, need_weights=True."""

    def __init__(self):
        super().__init__()
        self.a1 = nn.MultiheadAttention(8, 2, batch_first=True)
        self.a2 = nn.MultiheadAttention(8, 2, batch_first=True)
        self.a3 = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(24, 3)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        y1, _ = self.a1(x, x, x, need_weights=False)
        y2, _ = self.a2(x, x, x, key_padding_mask=pad, need_weights=False)
        y3, _ = self.a3(x, x, x)
        return self.head(torch.cat([y1, y2, y3], -1))


def multihead():
    """Head 1 of every attention is dead (output projection columns zero); a value dim of head 0 is the
    constant -1.3 in the unmasked ones (folded into the output projection's bias)."""
    g = _gen(13)
    m = _init(MultiHead(), g)
    with torch.no_grad():
        for a in (m.a1, m.a2, m.a3):
            a.out_proj.weight[:, 4:] = 0
        for a in (m.a1, m.a3):
            a.in_proj_weight[16 + 1] = 0
            a.in_proj_bias[16 + 1] = -1.3
    pad = torch.zeros(2, L, dtype=torch.bool)
    pad[1, 3:] = True
    return m.eval(), (_randn(g, 2, L, 8), pad)


def _static_batch(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> nn.Module:
    """`model` lowered at the batch size of `inputs` (every shape static) and emitted: the emitted module
    is read back from that program by sr_ir.lower, so it minimizes at the static batch."""
    from sr_ir.backend import emit
    from sr_ir.frontend import lower

    return emit(lower(model, inputs, dynamic_batch=False))


class PrefixTokens(nn.Module):
    """Two learned prefix tokens (a class token and a register token, as in ViT) before the sequence,
    every token flattened into a linear head."""

    def __init__(self):
        super().__init__()
        self.prefix = nn.Parameter(torch.zeros(1, 2, 6))
        self.head = nn.Linear((2 + L) * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], 1)
        return self.head(torch.flatten(t, 1))


def prefix_tokens():
    """Prefix token 0 holds 0.7 in every feature: a constant channel on axis 1 of [B, 2 + L, 6], folded
    through the flatten into the head. The only rank-3 axis-1 constants an engine can remove come from a
    parameter concatenated on axis 1 (concat.const_maps); the broadcast of the prefix over the batch is a
    parameter only at a static batch size (with a dynamic one it stays an `expand`, which no rule reads),
    so the model is lowered at a static batch of 2."""
    g = _gen(15)
    m = _init(PrefixTokens(), g)
    with torch.no_grad():
        m.prefix[0, 0] = 0.7
    x = _randn(g, 2, L, 6)
    return _static_batch(m.eval(), (x,)), (x,)


# ---- programs whose ops come only out of an earlier minimization: compensated norms -------------------
_COMPENSATED = """graph compensated(%x: f64[N, 6], %img: f64[N, 3, 5, 5]) -> (f64[N, 3]) {
  param @fc.weight: f64[5, 6]
  param @fc.bias: f64[5]
  param @ln.weight: f64[5]
  param @ln.bias: f64[5]
  param @rms.weight: f64[5]
  param @conv.weight: f64[4, 3, 3, 3]
  param @conv.bias: f64[4]
  param @lnc.weight: f64[4]
  param @lnc.bias: f64[4]
  param @head.weight: f64[3, 14]
  param @head.bias: f64[3]
  %h = linear(%x, @fc.weight, @fc.bias) : f64[N, 5]
  %n = compensated_layer_norm(%h, @ln.weight, @ln.bias, n_total=7, s1=-0.6, s2=2.18, eps=0.001) : f64[N, 5]
  %r = compensated_rms_norm(%h, @rms.weight, n_total=7, s2=2.18, eps=0.002) : f64[N, 5]
  %c = conv2d(%img, @conv.weight, @conv.bias, padding=[1, 1]) : f64[N, 4, 5, 5]
  %cn = compensated_layer_norm_channels(%c, @lnc.weight, @lnc.bias, n_total=6, s1=0.3, s2=1.17, eps=0.003) : f64[N, 4, 5, 5]
  %m = mean(%cn, dims=[2, 3], keepdim=false) : f64[N, 4]
  %cat = concat(%n, %r, %m, dim=1) : f64[N, 14]
  %y = linear(%cat, @head.weight, @head.bias) : f64[N, 3]
  return %y
}
"""


def compensated_norms():
    """Norms already compensated by an earlier minimization (two removed channels each, held 0.7 and
    -1.3, or 0.9 and -0.6), as the emitted module of that minimization lowers: a third channel now holds a
    constant (fc row 2 dead, 0.4; conv filter 1 dead, -0.8) and its gain is zero, so it goes too (compose)
    and its output is the norm's bias, or 0 (zero_gamma), folded into the head. torch.export never gives
    these ops: the program is parsed from IR text and emitted (sr_ir.lower reads an emitted module back
    from its program)."""
    import sr_ir
    from sr_ir.backend import emit

    g = _gen(14)
    p = sr_ir.parse(_COMPENSATED)
    w = {}
    for name, t in p.params.items():
        shape = tuple(int(d) for d in t.shape)
        if name.endswith(".bias"):
            w[name] = 0.5 * _randn(g, *shape)
        elif name in ("ln.weight", "rms.weight", "lnc.weight"):
            w[name] = 1.0 + 0.3 * _randn(g, *shape)
        else:
            w[name] = _randn(g, *shape) / math.sqrt(math.prod(shape[1:]))
    w["fc.weight"][2] = 0
    w["fc.bias"][2] = 0.4
    w["conv.weight"][1] = 0
    w["conv.bias"][1] = -0.8
    for n, c in (("ln.weight", 2), ("rms.weight", 2), ("lnc.weight", 1)):
        w[n][c] = 0
    p.weights = w
    return emit(p), (_randn(g, 3, 6), _randn(g, 3, 3, 5, 5))


class _Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Linear(4, 6)
        self.lstm = nn.LSTM(6, 6, batch_first=True)
        self.gru = nn.GRU(6, 5, batch_first=True)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(self.lstm(self.pre(x))[0])[0])


@torch.no_grad()
def recurrent():
    """A linear layer feeding an LSTM feeding a GRU feeding a head. Each recurrent layer has a dead unit
    (every gate row and bias zero: its state stays 0, which the next layer folds as a constant input)
    and an unused one (no unit reads it: a zero recurrent column, and a zero column where the next layer
    reads it); neither is read by any unit, so both go. The linear layer's channel 1 is the constant 0.7
    (folded into the LSTM's input bias) and its channel 3 is not read by the LSTM."""
    g = _gen(23)
    m = _init(_Recurrent().to(DT).eval(), g)
    _dead_row(m.pre, {1: 0.7})
    m.lstm.weight_ih_l0[:, 3] = 0
    for rnn, gates, dead, unused, reader in ((m.lstm, 4, 1, 4, m.gru.weight_ih_l0), (m.gru, 3, 2, 0, m.head.weight)):
        h = rnn.hidden_size
        rows = [q * h + dead for q in range(gates)]
        for w in (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0):
            w[rows] = 0
        rnn.weight_hh_l0[:, [dead, unused]] = 0
        reader[:, unused] = 0
    return m, (_randn(g, 2, L, 4),)


CASES: dict[str, Callable[[], tuple[Any, tuple[torch.Tensor, ...]]]] = {
    "recurrent": recurrent,
    "dense_arith": dense_arith,
    "dense_act": dense_act,
    "dense_nobias": dense_nobias,
    "dense_norms": dense_norms,
    "tokens": tokens,
    "maps_elementwise": maps_elementwise,
    "maps_gated": maps_gated,
    "pads_maps": pads_maps,
    "pads_last": pads_last,
    "conv_bias": conv_bias,
    "conv_nobias": conv_nobias,
    "conv1d_bias": conv1d_bias,
    "conv1d_nobias": conv1d_nobias,
    "pools": pools,
    "maps_layout": maps_layout,
    "attention": attention,
    "attention_rope": attention_rope,
    "attention_rope_mha": attention_rope_mha,
    "attention_scaled_query": attention_scaled_query,
    "attention_partial_rope": attention_partial_rope,
    "attention_packed": attention_packed,
    "multihead": multihead,
    "prefix_tokens": prefix_tokens,
    "compensated_norms": compensated_norms,
}

# Every library rule -> one case where it fires (the fastest such case). Rules in file order of rules/.
FIRES: dict[str, str] = {
    "lstm.dead_unit": "recurrent",
    "gru.dead_unit": "recurrent",
    "channels.lstm.drop_unit": "recurrent",
    "channels.gru.drop_unit": "recurrent",
    "channels.lstm.fold_const_input": "recurrent",
    "channels.gru.fold_const_input": "recurrent",
    "channels.lstm.unused_input": "recurrent",
    "channels.gru.unused_input": "recurrent",
    "add.const": "dense_arith",
    "add.const_maps": "maps_elementwise",
    "sub.const": "dense_arith",
    "sub.const_maps": "maps_elementwise",
    "mul.const": "dense_arith",
    "mul.zero_left": "dense_arith",
    "mul.zero_right": "dense_arith",
    "channels.add.drop_channel": "dense_arith",
    "channels.add.drop_channel_maps": "maps_elementwise",
    "channels.sub.drop_channel": "dense_arith",
    "channels.sub.drop_channel_maps": "maps_elementwise",
    "channels.mul.drop_channel": "dense_arith",
    "channels.mul.drop_channel_maps": "maps_elementwise",
    "mul.zero_gated_maps": "maps_gated",
    "channels.mul.drop_channel_gated_maps": "maps_gated",
    "mul.zero_gated_maps_right": "maps_gated",
    "channels.mul.drop_channel_gated_maps_right": "maps_gated",
    "channels.pad1d.drop_last": "pads_maps",
    "channels.pad2d.drop_channel_maps": "pads_maps",
    "channels.pad3d.drop_last": "pads_maps",
    "pad1d.const_last": "pads_maps",
    "pad2d.zero_maps": "pads_maps",
    "pad1d.zero_maps": "conv1d_bias",
    "channels.pad1d.drop_channel_maps": "conv1d_bias",
    "pad3d.slice_last": "pads_maps",
    "pad3d.zero_last": "pads_maps",
    "channels.pad2d.drop_last": "pads_last",
    "pad2d.slice_last": "pads_last",
    "pad2d.slice_maps": "pads_last",
    "pad2d.zero_last": "pads_last",
    "add.channel_bias_const": "dense_arith",
    "channels.add.drop_channel_bias": "dense_arith",
    "mul.zero_scale": "dense_arith",
    "mul.const_scale": "dense_arith",
    "channels.mul.drop_channel_scale": "dense_arith",
    "mul.zero_scale_left": "dense_arith",
    "mul.const_scale_left": "dense_arith",
    "channels.mul.drop_channel_scale_left": "dense_arith",
    "add.broadcast_const": "tokens",
    "channels.add.drop_channel_broadcast": "tokens",
    "add.broadcast_const_unit": "tokens",
    "channels.add.drop_channel_broadcast_unit": "tokens",
    "channels.attention.zero_query_dim": "attention",
    "channels.attention.zero_query_dim_masked": "attention",
    "channels.attention.zero_key_dim": "attention",
    "channels.attention.zero_key_dim_masked": "attention",
    "channels.attention.const_key_dim": "attention",
    "channels.attention.const_key_dim_masked": "attention",
    "channels.attention.drop_value_dim": "attention",
    "channels.attention.drop_value_dim_masked": "attention",
    "attention.const_value_dim": "attention",
    "attention.const_value_dim_masked": "attention",
    "rope.zero_pair": "attention_rope",
    "channels.rope.drop_pair": "attention_rope",
    "batch_norm.const": "conv_bias",
    "channels.batch_norm.drop_channel": "conv_bias",
    "batch_norm.fold_linear": "dense_nobias",
    "batch_norm.fold_linear_nobias": "dense_nobias",
    "channels.batch_norm.fold_conv2d": "conv_bias",
    "channels.batch_norm.fold_conv2d_nobias": "conv_nobias",
    "channels.conv2d.dead_row": "compensated_norms",
    "channels.conv2d.dead_row_nobias": "conv_nobias",
    "channels.conv2d.drop_row": "compensated_norms",
    "channels.conv2d.drop_row_nobias": "conv_nobias",
    "channels.conv2d.unused_col": "maps_layout",
    "channels.conv2d.unused_col_nobias": "conv_nobias",
    "channels.conv2d.fold_zero": "conv_bias",
    "channels.conv2d.fold_zero_nobias": "conv_nobias",
    "channels.conv2d.fold_const": "maps_layout",
    "channels.conv2d.fold_const_nobias": "conv_nobias",
    "channels.conv2d.drop_depthwise": "conv_bias",
    "channels.conv2d.drop_depthwise_nobias": "conv_nobias",
    "conv2d.depthwise_zero": "conv_bias",
    "conv2d.depthwise_const": "conv_bias",
    "channels.conv1d.dead_row": "conv1d_bias",
    "channels.conv1d.dead_row_nobias": "conv1d_nobias",
    "channels.conv1d.drop_row": "conv1d_nobias",
    "channels.conv1d.drop_row_nobias": "conv1d_nobias",
    "channels.conv1d.unused_col": "conv1d_bias",
    "channels.conv1d.unused_col_nobias": "conv1d_nobias",
    "channels.conv1d.fold_zero": "conv1d_bias",
    "channels.conv1d.fold_zero_nobias": "conv1d_nobias",
    "channels.conv1d.fold_const": "conv1d_bias",
    "channels.conv1d.fold_const_nobias": "conv1d_nobias",
    "channels.conv1d.drop_depthwise": "conv1d_bias",
    "channels.conv1d.drop_depthwise_nobias": "conv1d_nobias",
    "conv1d.depthwise_zero": "conv1d_bias",
    "conv1d.depthwise_const": "conv1d_bias",
    "relu.const": "dense_act",
    "relu.const_maps": "maps_elementwise",
    "channels.relu.drop_channel": "dense_act",
    "channels.relu.drop_channel_maps": "maps_elementwise",
    "relu6.const": "dense_act",
    "relu6.const_maps": "maps_elementwise",
    "channels.relu6.drop_channel": "dense_act",
    "channels.relu6.drop_channel_maps": "maps_elementwise",
    "hardtanh.const": "dense_act",
    "hardtanh.const_maps": "maps_elementwise",
    "channels.hardtanh.drop_channel": "dense_act",
    "channels.hardtanh.drop_channel_maps": "maps_elementwise",
    "hardswish.const": "dense_act",
    "hardswish.const_maps": "maps_elementwise",
    "channels.hardswish.drop_channel": "dense_act",
    "channels.hardswish.drop_channel_maps": "maps_elementwise",
    "hardsigmoid.const": "dense_act",
    "hardsigmoid.const_maps": "maps_elementwise",
    "channels.hardsigmoid.drop_channel": "dense_act",
    "channels.hardsigmoid.drop_channel_maps": "maps_elementwise",
    "silu.const": "dense_act",
    "silu.const_maps": "maps_elementwise",
    "channels.silu.drop_channel": "dense_act",
    "channels.silu.drop_channel_maps": "maps_elementwise",
    "tanh.const": "dense_act",
    "tanh.const_maps": "maps_elementwise",
    "channels.tanh.drop_channel": "dense_act",
    "channels.tanh.drop_channel_maps": "maps_elementwise",
    "sigmoid.const": "dense_act",
    "sigmoid.const_maps": "maps_elementwise",
    "channels.sigmoid.drop_channel": "dense_act",
    "channels.sigmoid.drop_channel_maps": "maps_elementwise",
    "gelu.const": "dense_act",
    "gelu.const_maps": "maps_elementwise",
    "channels.gelu.drop_channel": "dense_act",
    "channels.gelu.drop_channel_maps": "maps_elementwise",
    "embedding.const_column": "tokens",
    "channels.embedding.drop_column": "tokens",
    "channels.permute.drop_channel": "maps_layout",
    "channels.permute.drop_channel_back": "maps_layout",
    "permute.const": "maps_layout",
    "permute.const_back": "maps_layout",
    "channels.reshape.flatten": "pools",
    "channels.reshape.flatten1d": "pools",
    "channels.reshape.unflatten": "maps_layout",
    "channels.reshape.merge_leading": "tokens",
    "channels.reshape.split_leading": "tokens",
    "reshape.flatten_const": "pools",
    "reshape.flatten1d_const": "prefix_tokens",
    "reshape.unflatten_const": "maps_layout",
    "reshape.merge_leading_const": "tokens",
    "reshape.split_leading_const": "tokens",
    "channels.concat.drop_channel": "dense_act",
    "channels.concat.drop_channel_maps": "maps_elementwise",
    "channels.concat.drop_operand_last": "tokens",
    "channels.concat.drop_channel_last": "tokens",
    "concat.const": "dense_act",
    "concat.const_maps": "maps_elementwise",
    "concat.const_last": "tokens",
    "channels.gather.drop_channel": "dense_nobias",
    "channels.gather.drop_channel_maps": "pools",
    "channels.select.drop_channel_tokens": "tokens",
    "select.const_tokens": "tokens",
    "slice.const": "tokens",
    "channels.slice.drop_inside": "tokens",
    "channels.slice.unread_before": "tokens",
    "channels.slice.unread_after": "tokens",
    "channels.permute.drop_channel_swap": "tokens",
    "permute.const_swap": "tokens",
    "channels.linear.dead_row": "dense_act",
    "channels.linear.dead_row_nobias": "dense_nobias",
    "channels.linear.drop_row": "dense_act",
    "channels.linear.drop_row_nobias": "dense_nobias",
    "channels.linear.unused_col": "dense_act",
    "channels.linear.unused_col_nobias": "dense_nobias",
    "channels.linear.fold_const": "dense_act",
    "channels.linear.fold_zero_nobias": "dense_nobias",
    "channels.linear.fold_const_nobias": "dense_nobias",
    "layer_norm.zero_gamma": "dense_norms",
    "layer_norm.compensate": "dense_norms",
    "compensated_layer_norm.compose": "dense_norms",
    "compensated_layer_norm.zero_gamma": "compensated_norms",
    "rms_norm.zero_gamma": "dense_norms",
    "rms_norm.compensate": "dense_norms",
    "compensated_rms_norm.compose": "dense_norms",
    "compensated_rms_norm.zero_gamma": "compensated_norms",
    "layer_norm_channels.zero_gamma": "maps_layout",
    "layer_norm_channels.compensate": "maps_layout",
    "compensated_layer_norm_channels.compose": "compensated_norms",
    "compensated_layer_norm_channels.zero_gamma": "compensated_norms",
    "channels.max_pool2d.drop_channel": "pools",
    "channels.avg_pool2d.drop_channel": "pools",
    "channels.adaptive_avg_pool2d.drop_channel": "pools",
    "adaptive_avg_pool2d.const": "pools",
    "avg_pool2d.const_unpadded": "pools",
    "avg_pool2d.const_exclude_pad": "pools",
    "max_pool2d.const": "pools",
    "channels.mean.drop_channel": "compensated_norms",
    "channels.mean.drop_channel_neg": "pools",
    "mean.const": "compensated_norms",
    "mean.const_neg": "pools",
    "channels.mean.drop_channel_tokens": "tokens",
    "mean.const_tokens": "tokens",
    "raise.gelu_tanh": "dense_act",
    "raise.rope": "attention_rope",
    "raise.attention.heads": "attention",
    "raise.attention.heads_masked": "attention",
    "raise.attention.heads_rope": "attention_rope_mha",
    "raise.attention.heads_rope_masked": "attention_rope_mha",
    "raise.attention.heads_rope_grouped": "attention_rope",
    "raise.attention.heads_rope_grouped_masked": "attention_rope",
    "raise.attention.slice_scaled": "attention_scaled_query",
    "raise.attention.heads_partial_rope": "attention_partial_rope",
    "raise.attention.heads_partial_rope_masked": "attention_partial_rope",
    "raise.attention.heads_packed_partial_rope_masked": "attention_packed",
    "raise.multihead.unpack": "multihead",
    "raise.multihead.math": "multihead",
    "raise.multihead.heads": "multihead",
    "raise.multihead.heads_masked": "multihead",
    "raise.multihead.heads_merged": "multihead",
    "raise.layer_norm_channels": "maps_layout",
    "raise.rms_norm": "dense_norms",
    "raise.rms_norm_weight_last": "dense_norms",
}

# Rules no model can fire, with the reason (checked by the test: they fire on no case of the corpus).
UNREACHABLE: dict[str, str] = {}

# Rules that fire only in special circumstances, which their case sets up (reported by the test).
NOTES: dict[str, str] = {
    "reshape.flatten1d_const": (
        "a fact counts only where a removal uses it, and the only removable constant on axis 1 of a rank-3 "
        "tensor is a parameter concatenated on that axis (concat.const_maps): every other axis-1 constant "
        "of rank 3 starts at a layer_norm_channels zero gain, whose output channel cannot go, and no rule "
        "carries an axis-1 constant into rank 3 from another rank. A parameter broadcast over the batch "
        "(a prefix token) is folded into such a parameter only at a static batch size: prefix_tokens."
    ),
}
