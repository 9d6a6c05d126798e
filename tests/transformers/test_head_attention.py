"""head_attention: heads of unequal widths, grouped-query heads and RoPE agree with a per-head computation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sr_ir.nn.functional import head_attention, rope_tables


def _per_head(q, k, v, qk, vd, group, causal, scale, mask=None, cos=None, sin=None, freq=None):
    """The definition, one head at a time (slow, obviously right)."""
    qo = [0]
    for g in group:
        qo.append(qo[-1] + qk[g])
    ko, vo = [0], [0]
    for a, b in zip(qk, vd):
        ko.append(ko[-1] + a)
        vo.append(vo[-1] + b)
    fo = [0]
    for a in qk:
        fo.append(fo[-1] + a // 2)
    outs = []
    for h, g in enumerate(group):
        qh, kh, vh = q[..., qo[h]:qo[h + 1]], k[..., ko[g]:ko[g + 1]], v[..., vo[g]:vo[g + 1]]
        if cos is not None:
            fr = freq[fo[g]:fo[g + 1]]
            c, s = cos[..., fr], sin[..., fr]
            c, s = torch.cat([c, c], -1), torch.cat([s, s], -1)
            rot = lambda t: torch.cat([-t[..., t.shape[-1] // 2:], t[..., : t.shape[-1] // 2]], -1)
            qh, kh = qh * c + rot(qh) * s, kh * c + rot(kh) * s
        sc = (qh @ kh.transpose(-1, -2)) * scale
        if causal:
            L, S = sc.shape[-2:]
            sc = sc.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
        if mask is not None:
            sc = sc.masked_fill(~mask[:, 0], float("-inf"))
        outs.append(torch.softmax(sc, -1) @ vh)
    return torch.cat(outs, -1)


@pytest.mark.parametrize("causal", [False, True])
def test_unequal_heads_match_definition(causal):
    g = torch.Generator().manual_seed(0)
    qk, vd, group = [5, 8, 3], [6, 2, 8], [0, 1, 2]
    q = torch.randn(2, 7, sum(qk[i] for i in group), generator=g, dtype=torch.float64)
    k = torch.randn(2, 7, sum(qk), generator=g, dtype=torch.float64)
    v = torch.randn(2, 7, sum(vd), generator=g, dtype=torch.float64)
    got = head_attention(q, k, v, None, qk, vd, group, causal, 0.3)
    want = _per_head(q, k, v, qk, vd, group, causal, 0.3)
    assert got.shape == (2, 7, sum(vd))
    assert float((got - want).abs().max()) <= 1e-13


def test_grouped_query_rope_and_padding_mask():
    g = torch.Generator().manual_seed(1)
    qk, vd, group = [4, 8], [3, 8], [0, 0, 1, 1, 1]
    freq = [0, 3] + [0, 1, 2, 3]
    q = torch.randn(2, 6, sum(qk[i] for i in group), generator=g, dtype=torch.float64)
    k = torch.randn(2, 6, sum(qk), generator=g, dtype=torch.float64)
    v = torch.randn(2, 6, sum(vd), generator=g, dtype=torch.float64)
    inv = 1.0 / 10000 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    cos, sin = rope_tables(torch.arange(6)[None], inv)
    pad = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    pad[1, ..., 4:] = False
    got = head_attention(q, k, v, pad, qk, vd, group, False, 0.25, cos, sin, freq)
    want = _per_head(q, k, v, qk, vd, group, False, 0.25, pad, cos, sin, freq)
    assert got.shape == (2, 6, sum(vd[i] for i in group))
    assert float((got - want).abs().max()) <= 1e-13


def test_equal_heads_are_plain_sdpa():
    q, k, v = (torch.randn(3, 4, 5, 16, dtype=torch.float64) for _ in range(3))
    flat = lambda t: t.transpose(1, 2).reshape(3, 5, 64)
    got = head_attention(flat(q), flat(k), flat(v), None, [16] * 4, [16] * 4, [0, 1, 2, 3], True)
    want = flat(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert torch.equal(got, want)


def test_bad_heads_are_refused():
    x = torch.zeros(1, 2, 8)
    with pytest.raises(ValueError, match="explicit scale"):
        head_attention(x, x, x, None, [4, 3], [4, 4], [0, 1])
    with pytest.raises(ValueError, match="head_group"):
        head_attention(x, x, x, None, [4, 4], [4, 4], [0, 2])


def test_exports_and_compiles():
    class M(torch.nn.Module):
        def forward(self, q, k, v):
            return head_attention(q, k, v, None, [3, 5], [2, 6], [0, 1, 1], True, 0.5)

    q, k, v = torch.randn(2, 4, 13), torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    ref = M()(q, k, v)
    assert torch.allclose(torch.export.export(M(), (q, k, v)).module()(q, k, v), ref, atol=1e-6)
    assert torch.allclose(torch.compile(M(), backend="aot_eager")(q, k, v), ref, atol=1e-6)
