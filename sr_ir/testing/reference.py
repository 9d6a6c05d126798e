"""An independent, plan-driven minimization of the planted transformer families.

It knows from the Plan which channels, heads and units go, and builds the smaller model by hand:
weights sliced, constants folded into biases, norms compensated, heads with their own widths through
a private per-head attention written here (`_head_attention`), not through the IR's ops. It checks a Plan (the structure really is exactly removable and the
minimal count is reachable) independently of the rule engine, and with `naive_norms=True` it shows what
peers get when they slice LayerNorm/RMSNorm statistics instead of compensating.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import functional as SF
from .planting import Plan


def _keep(n: int, drop: list[int] | set[int]) -> list[int]:
    d = set(drop)
    return [i for i in range(n) if i not in d]


@dataclass
class _Norm:
    weight: torch.Tensor
    bias: torch.Tensor | None
    n_total: int
    s1: float
    s2: float
    eps: float | None
    rms: bool

    def __call__(self, x: torch.Tensor, naive: bool) -> torch.Tensor:
        if self.rms:
            if naive:
                return SF.rms_norm(x, self.weight, self.eps)
            return SF.compensated_rms_norm(x, self.weight, self.n_total, self.s2, self.eps)
        if naive:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return SF.compensated_layer_norm(x, self.weight, self.bias, self.n_total, self.s1, self.s2, self.eps)


@dataclass
class ReferenceModel:
    """The hand-minimized model: tensors and the forward that uses them."""

    plan: Plan
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    norms: dict[str, _Norm] = field(default_factory=dict)
    attn: dict[int, dict[str, Any]] = field(default_factory=dict)
    inv_freq: torch.Tensor | None = None  # RoPE frequencies (a buffer of the model, not a parameter)

    def param_count(self) -> int:
        seen: set[int] = set()
        total = 0
        for t in list(self.tensors.values()) + [n.weight for n in self.norms.values()] + [
            n.bias for n in self.norms.values() if n.bias is not None
        ]:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel()
        return total

    def __call__(self, ids: torch.Tensor, naive_norms: bool = False) -> torch.Tensor:
        return _forward(self, ids, naive_norms)


def _norm_of(m: nn.Module, keep: list[int], consts: torch.Tensor) -> _Norm:
    """Compensated form of a LayerNorm / RMSNorm keeping `keep`; the other channels held `consts`."""
    rms = not isinstance(m, nn.LayerNorm)
    eps = m.eps if isinstance(m, nn.LayerNorm) else m.variance_epsilon
    c = consts.double()
    bias = m.bias.detach()[keep] if getattr(m, "bias", None) is not None else None
    return _Norm(m.weight.detach()[keep], bias, m.weight.shape[0], float(c.sum()), float((c * c).sum()), eps, rms)


def _norm_out_const(m: nn.Module, removed: list[int]) -> torch.Tensor:
    """A norm's output on removed channels: gamma is 0 there, so it is beta (0 for RMSNorm)."""
    assert torch.all(m.weight.detach()[removed] == 0), "planted norm must have gamma = 0 on removed channels"
    b = getattr(m, "bias", None)
    return b.detach()[removed].clone() if b is not None else torch.zeros(len(removed), dtype=m.weight.dtype)


def _linear(lin: nn.Linear, rows: list[int], cols: list[int], const_in: torch.Tensor | None, removed_in: list[int]):
    """Slice a linear to rows x cols, folding the constant inputs `const_in` on channels `removed_in`."""
    w = lin.weight.detach()
    b = lin.bias.detach().clone() if lin.bias is not None else None
    if const_in is not None and removed_in:
        fold = w[:, removed_in] @ const_in
        if b is None:
            assert torch.all(fold == 0), "a constant folded into a bias-less layer must be zero"
        else:
            b = b + fold
    return w[rows][:, cols].clone(), None if b is None else b[rows].clone()


@torch.no_grad()
def reference_minimize(model: nn.Module, plan: Plan) -> ReferenceModel:
    """Build the minimal model the Plan promises (see module doc)."""
    cfg, fam = plan.cfg, plan.family
    R = list(plan.residual)
    K = _keep(cfg.d_model, R)
    hd = cfg.hd
    ref = ReferenceModel(plan)
    T = ref.tensors
    seq = plan.seq_len or cfg.max_len
    tok = model.tok.weight.detach()
    T["tok"] = tok[:, K].clone()
    stream = tok[0, R].clone()  # the constant the stream holds on R
    if fam == "llama":
        ref.inv_freq = model.inv_freq.detach().clone()
    if fam != "llama":
        pos = model.pos.weight.detach()[:seq]
        T["pos"] = pos[:, K].clone()
        stream = stream + pos[0, R]
    if fam == "post_ln":
        ref.norms["ln_emb"] = _norm_of(model.ln_emb, K, stream)
        stream = _norm_out_const(model.ln_emb, R)
    for layer, blk in enumerate(model.blocks):
        att = blk.attn
        pre = fam != "post_ln"
        n1 = {"llama": "input_layernorm", "post_ln": "ln1"}.get(fam, "ln1")
        n2 = {"llama": "post_attention_layernorm", "post_ln": "ln2"}.get(fam, "ln2")
        if pre:
            ref.norms[f"{layer}.n1"] = _norm_of(getattr(blk, n1), K, stream)
            attn_in = _norm_out_const(getattr(blk, n1), R)
        else:
            attn_in = stream
        heads, kv = plan.alive_heads(layer), plan.alive_kv(layer)
        qk_keep = {g: _keep(hd, plan.qk_dims.get(layer, {}).get(g, [])) for g in kv}
        v_keep = {g: _keep(hd, plan.v_dims.get(layer, {}).get(g, [])) for g in kv}
        q_rows = [h * hd + d for h in heads for d in qk_keep[plan.group(h)]]
        k_rows = [g * hd + d for g in kv for d in qk_keep[g]]
        v_rows = [g * hd + d for g in kv for d in v_keep[g]]
        o_cols = [h * hd + d for h in heads for d in v_keep[plan.group(h)]]
        T[f"{layer}.q.w"], T[f"{layer}.q.b"] = _linear(att.q_proj, q_rows, K, attn_in, R)
        T[f"{layer}.k.w"], T[f"{layer}.k.b"] = _linear(att.k_proj, k_rows, K, attn_in, R)
        T[f"{layer}.v.w"], T[f"{layer}.v.b"] = _linear(att.v_proj, v_rows, K, attn_in, R)
        # value dims that hold a constant: every softmax row sums to 1, so the head outputs that constant
        vw_full, vb_full = _linear(att.v_proj, list(range(cfg.kv_heads * hd)), K, attn_in, R)
        wo = att.o_proj.weight.detach()
        bo = att.o_proj.bias.detach().clone() if att.o_proj.bias is not None else None
        for h in heads:
            g = plan.group(h)
            for d in plan.v_dims.get(layer, {}).get(g, []):
                assert torch.all(vw_full[g * hd + d] == 0)
                const = vb_full[g * hd + d] if vb_full is not None else torch.zeros((), dtype=wo.dtype)
                if bo is None:
                    assert const == 0
                else:
                    bo = bo + wo[:, h * hd + d] * const
        attn_out = bo[R].clone() if bo is not None else torch.zeros(len(R), dtype=wo.dtype)
        T[f"{layer}.o.w"] = wo[K][:, o_cols].clone()
        T[f"{layer}.o.b"] = None if bo is None else bo[K].clone()
        ref.attn[layer] = {
            "qk_dims": [len(qk_keep[g]) for g in kv],
            "v_dims": [len(v_keep[g]) for g in kv],
            "head_group": [kv.index(plan.group(h)) for h in heads],
            "rope_freq": [p for g in kv for p in qk_keep[g] if p < hd // 2] if fam == "llama" else None,
        }
        for g in kv:  # a RoPE head keeps whole pairs: first halves then their partners
            if fam == "llama":
                firsts = [d for d in qk_keep[g] if d < hd // 2]
                assert qk_keep[g] == firsts + [d + hd // 2 for d in firsts]
        # residual after attention
        if pre:
            stream = stream + attn_out
            ref.norms[f"{layer}.n2"] = _norm_of(getattr(blk, n2), K, stream)
            mlp_in = _norm_out_const(getattr(blk, n2), R)
        else:
            ref.norms[f"{layer}.n1"] = _norm_of(getattr(blk, n1), K, stream + attn_out)
            stream = _norm_out_const(getattr(blk, n1), R)
            mlp_in = stream
        units = plan.mlp_units.get(layer, [])
        U = _keep(cfg.d_ff, units)
        if fam == "llama":
            m = blk.mlp
            T[f"{layer}.gate.w"], _ = _linear(m.gate_proj, U, K, mlp_in, R)
            T[f"{layer}.up.w"], _ = _linear(m.up_proj, U, K, mlp_in, R)
            assert torch.all(m.gate_proj.weight[units] == 0)  # silu(0) * up = 0: nothing to fold
            T[f"{layer}.down.w"], _ = _linear(m.down_proj, K, U, None, [])
            mlp_out = torch.zeros(len(R), dtype=wo.dtype)
        else:
            m = blk.mlp
            w1, b1 = _linear(m.fc1, list(range(cfg.d_ff)), K, mlp_in, R)
            T[f"{layer}.fc1.w"], T[f"{layer}.fc1.b"] = w1[U].clone(), b1[U].clone()
            assert torch.all(w1[units] == 0)
            b2 = m.fc2.bias.detach() + m.fc2.weight.detach()[:, units] @ F.gelu(b1[units])
            T[f"{layer}.fc2.w"] = m.fc2.weight.detach()[K][:, U].clone()
            T[f"{layer}.fc2.b"] = b2[K].clone()
            mlp_out = b2[R].clone()
        if pre:
            stream = stream + mlp_out
        else:
            ref.norms[f"{layer}.n2"] = _norm_of(getattr(blk, n2), K, stream + mlp_out)
            stream = _norm_out_const(getattr(blk, n2), R)
    if fam in ("pre_ln", "gpt"):
        ref.norms["final"] = _norm_of(model.ln_f, K, stream)
        out_const = _norm_out_const(model.ln_f, R)
    elif fam == "llama":
        ref.norms["final"] = _norm_of(model.norm, K, stream)
        out_const = _norm_out_const(model.norm, R)
    else:
        out_const = stream
    if fam in ("pre_ln", "post_ln"):
        T["head.w"], T["head.b"] = _linear(model.head, list(range(cfg.n_classes)), K, out_const, R)
    elif fam == "gpt":
        fold = tok[:, R] @ out_const
        assert torch.all(fold == 0), "tied head: the removed embedding columns must be zero"
        T["head.w"] = T["tok"]  # tied: the same tensor
    else:
        T["head.w"], _ = _linear(model.lm_head, list(range(cfg.vocab)), K, out_const, R)
    for k in [k for k, v in T.items() if v is None]:
        del T[k]
    return ref


def _forward(ref: ReferenceModel, ids: torch.Tensor, naive: bool) -> torch.Tensor:
    plan, T, fam = ref.plan, ref.tensors, ref.plan.family
    cfg = plan.cfg
    x = F.embedding(ids, T["tok"])
    if fam != "llama":
        x = x + T["pos"][: ids.shape[1]]
    if fam == "post_ln":
        x = ref.norms["ln_emb"](x, naive)
    rope = None
    if fam == "llama":
        pos = torch.arange(ids.shape[1])
        ang = (pos[:, None].to(ref.inv_freq.dtype) * ref.inv_freq[None])[None]
        rope = (ang.cos(), ang.sin())
    for layer in range(cfg.n_layers):
        a = ref.attn[layer]
        pre = fam != "post_ln"
        h = ref.norms[f"{layer}.n1"](x, naive) if pre else x

        def lin(name: str, t: torch.Tensor) -> torch.Tensor:
            return F.linear(t, T[f"{layer}.{name}.w"], T.get(f"{layer}.{name}.b"))

        o = _head_attention(
            lin("q", h), lin("k", h), lin("v", h), None, a["qk_dims"], a["v_dims"], a["head_group"],
            causal=fam in ("gpt", "llama"), scale=1.0 / cfg.hd**0.5,
            rope_cos=None if rope is None else rope[0], rope_sin=None if rope is None else rope[1],
            rope_freq=a["rope_freq"],
        )
        if pre:
            x = x + lin("o", o)
            h = ref.norms[f"{layer}.n2"](x, naive)
        else:
            x = ref.norms[f"{layer}.n1"](x + lin("o", o), naive)
            h = x
        if fam == "llama":
            y = lin("down", F.silu(lin("gate", h)) * lin("up", h))
        else:
            y = lin("fc2", F.gelu(lin("fc1", h)))
        x = x + y if pre else ref.norms[f"{layer}.n2"](x + y, naive)
    if fam in ("pre_ln", "gpt", "llama"):
        x = ref.norms["final"](x, naive)
    if fam == "pre_ln":
        return F.linear(x.mean(1), T["head.w"], T["head.b"])
    if fam == "post_ln":
        return F.linear(x[:, 0], T["head.w"], T["head.b"])
    return F.linear(x, T["head.w"])


# ---- attention with heads of unequal widths (an implementation of its own, not the engine's) ------
def _head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: "torch.Tensor | None",
    qk_dims: "list[int]",
    v_dims: "list[int]",
    head_group: "list[int]",
    causal: bool = False,
    scale: "float | None" = None,
    rope_cos: "torch.Tensor | None" = None,
    rope_sin: "torch.Tensor | None" = None,
    rope_freq: "list[int] | None" = None,
) -> torch.Tensor:
    """Scaled dot-product attention whose heads may have different query/key and value widths.

    k: [*B, S, sum_g qk_dims[g]] and v: [*B, S, sum_g v_dims[g]] hold one block per key/value head g;
    q: [*B, L, sum_h qk_dims[head_group[h]]] one block per query head h, whose key/value head is
    head_group[h] (grouped-query attention when several share one). The result is
    [*B, L, sum_h v_dims[head_group[h]]], query heads back to back, ready for the output projection.
    `scale` multiplies q.k (None: 1/sqrt of the common head width, only when all heads agree).
    `mask`: boolean (True = attend) or additive, broadcastable to [*B, H, L, S].
    RoPE, rotate-half convention, when `rope_cos`/`rope_sin` ([*B or 1, L, F]) are given: key/value head g
    holds qk_dims[g] / 2 rotation pairs (d, p + d); `rope_freq` lists, head after head, the index into the
    tables' last axis of each pair's frequency.
    Heads of unequal width are zero-padded to the widest (zero query/key columns add nothing to a score,
    zero value columns are dropped again), so the whole computation is one batched attention call.
    """
    n_kv = len(qk_dims)
    if len(v_dims) != n_kv:
        raise ValueError("head_attention: qk_dims and v_dims must list the same key/value heads")
    if any(g < 0 or g >= n_kv for g in head_group):
        raise ValueError("head_attention: head_group names a key/value head that does not exist")
    dq = max(qk_dims)
    dv = max(v_dims)
    if scale is None:
        if len(set(qk_dims)) != 1:
            raise ValueError("head_attention: heads of different widths need an explicit scale")
        scale = 1.0 / float(qk_dims[0]) ** 0.5

    def split(t: torch.Tensor, sizes: "list[int]", width: int) -> torch.Tensor:
        # [*B, L, sum(sizes)] -> [*B, G, L, width], block i zero-padded to `width`
        g = len(sizes)
        if all(sz == width for sz in sizes):
            return t.reshape(t.shape[:-1] + (g, width)).transpose(-3, -2)
        zero_col = sum(sizes)
        idx, off = [], 0
        for sz in sizes:
            idx.extend(off + d if d < sz else zero_col for d in range(width))
            off += sz
        ext = torch.cat([t, t.new_zeros(t.shape[:-1] + (1,))], -1)
        sel = ext.index_select(-1, torch.tensor(idx, dtype=torch.long, device=t.device))
        return sel.reshape(t.shape[:-1] + (g, width)).transpose(-3, -2)

    def rope(t: torch.Tensor, freqs: "list[list[int]]") -> torch.Tensor:
        # t: [*B, G, L, width]; head g rotates pairs (d, p_g + d) by frequency freqs[g][d]
        g, width = len(freqs), t.shape[-1]
        fidx, partner, sign = [], [], []
        for fs in freqs:
            p = len(fs)
            for d in range(width):
                if d < p:
                    fidx.append(fs[d]), partner.append(p + d), sign.append(-1.0)
                elif d < 2 * p:
                    fidx.append(fs[d - p]), partner.append(d - p), sign.append(1.0)
                else:  # padding: identity on a zero column
                    fidx.append(0), partner.append(d), sign.append(0.0)
        dev = t.device
        fi = torch.tensor(fidx, dtype=torch.long, device=dev)
        sg = torch.tensor(sign, dtype=t.dtype, device=dev).reshape(g, 1, width)
        pt = torch.tensor(partner, dtype=torch.long, device=dev).reshape(g, 1, width)
        c = rope_cos.to(t.dtype).index_select(-1, fi)
        sn = rope_sin.to(t.dtype).index_select(-1, fi)
        c = c.reshape(c.shape[:-1] + (g, width)).transpose(-3, -2)  # [*C, G, L, width]
        sn = sn.reshape(sn.shape[:-1] + (g, width)).transpose(-3, -2)
        live = (sg != 0).to(t.dtype)
        c = c * live + (1 - live)
        rotated = torch.gather(t, -1, pt.expand(t.shape))
        return t * c + rotated * (sn * sg)

    q_sizes = [qk_dims[g] for g in head_group]
    qh = split(q, q_sizes, dq)  # [*B, H, L, dq]
    kh = split(k, list(qk_dims), dq)  # [*B, G, S, dq]
    vh = split(v, list(v_dims), dv)  # [*B, G, S, dv]
    if rope_cos is not None:
        if rope_sin is None or rope_freq is None:
            raise ValueError("head_attention: RoPE needs rope_cos, rope_sin and rope_freq")
        if any(d % 2 for d in qk_dims) or len(rope_freq) * 2 != sum(qk_dims):
            raise ValueError("head_attention: RoPE heads need even widths and one frequency per rotation pair")
        per_kv, off = [], 0
        for d in qk_dims:
            per_kv.append(list(rope_freq[off : off + d // 2]))
            off += d // 2
        qh = rope(qh, [per_kv[g] for g in head_group])
        kh = rope(kh, per_kv)
    if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
        mask = mask.to(q.dtype)  # an additive mask follows the query's dtype, as nn.MultiheadAttention's does
    if list(head_group) != list(range(n_kv)):
        grp = torch.tensor(list(head_group), dtype=torch.long, device=q.device)
        kh = kh.index_select(-3, grp)
        vh = vh.index_select(-3, grp)
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, is_causal=causal, scale=scale)
    o = o.transpose(-3, -2)  # [*B, L, H, dv]
    o = o.reshape(o.shape[:-2] + (o.shape[-2] * dv,))
    out_sizes = [v_dims[g] for g in head_group]
    if all(sz == dv for sz in out_sizes):
        return o
    keep = [h * dv + d for h, sz in enumerate(out_sizes) for d in range(sz)]
    return o.index_select(-1, torch.tensor(keep, dtype=torch.long, device=o.device))
