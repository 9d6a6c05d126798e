"""Transformer reductions the channel engine cannot express with axis ties: attention heads and per-head
query/key and value dims, gated MLP units, and residual-stream channels across LayerNorm / RMSNorm
(compensated norms). minimization.md sections 3 and 4 state each step and its side conditions.

- heads (`head_attention` whose q/k/v come from single-use linears and whose result feeds one linear):
  a query head whose output-projection columns are all zero is dropped (its key/value head too when no
  query head uses it any more); a value dim whose value row is zero holds its bias for every query that
  attends to a key (softmax rows sum to 1), so `bias * Wo[:, d]` folds into the output bias: only when
  no row can be fully masked (no mask operand, or a constant one with a true entry in every row; causal
  self-attention always attends to the diagonal); a value dim no alive head reads is dropped; a query/key
  dim whose query is zero for every head of its group, or whose key is a constant (the score term is
  then the same for every key: softmax shift invariance), is dropped; with RoPE only whole rotation pairs
  whose query or key is exactly zero go, and the pair's frequency index stays with the remaining pairs.
- gated MLP (`down(act(gate(x)) * up(x))`, act(0) = 0): a unit whose gate or up row is zero with no
  bias is zero for every input: its rows and the down column go.
- residual stream: the values tied through add/sub, norms, casts, token means/selects form a group; a
  channel goes when every value of the group holds a known constant on it (writers: zero linear rows,
  constant embedding columns, norms with gamma = 0) and every reader absorbs it: linears fold it into
  their bias, norms become compensated norms (S1, S2 and the full width carried, composing with earlier
  compensation). A group that reaches a model output, a model input, or any other op keeps its channels.

Every step is a vectorized check over channels (loops are over heads and nodes only). The engine's
numeric verification of the emitted module backs every result.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from ..ir.program import Node, ParamRef, Program, ValueRef
from ..ir.types import TensorType



@dataclass
class TransformerReport:
    """What the transformer reductions removed, summed over passes."""

    heads: int = 0
    kv_heads: int = 0
    qk_dims: int = 0
    v_dims: int = 0
    v_dims_folded: int = 0
    gated_units: int = 0
    residual_channels: int = 0
    norms_compensated: list[str] = field(default_factory=list)

    def any(self) -> bool:
        return bool(self.heads or self.qk_dims or self.v_dims or self.gated_units or self.residual_channels)

    def add(self, other: "TransformerReport") -> None:
        for k in ("heads", "kv_heads", "qk_dims", "v_dims", "v_dims_folded", "gated_units", "residual_channels"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.norms_compensated += [n for n in other.norms_compensated if n not in self.norms_compensated]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "heads", "kv_heads", "qk_dims", "v_dims", "v_dims_folded", "gated_units", "residual_channels",
            "norms_compensated")}


class _Gate:
    """Each reduction is the application of named rules of rules/minimize/ (stated on the single-head
    `attention` op and proved there); a reduction runs only when its rules have current certificates.
    Without a RuleBook (direct calls in tests) every reduction is allowed."""

    def __init__(self, book: Any):
        self.book = book

    def ok(self, *names: str) -> bool:
        if self.book is None:
            return True
        if not all(self.book.certified(n) for n in names):
            return False
        for n in names:
            self.book.used[n] = self.book.used.get(n, 0) + 1
        return True


def reduce_transformer(p: Program, book: Any = None) -> tuple[Program, TransformerReport]:
    """Apply the reductions once each (the caller iterates to a fixpoint with the channel engine).
    `book` (a minimize RuleBook) gates every reduction on the certificates of the rules that justify it."""
    rep = TransformerReport()
    if not any(n.op == "head_attention" for n in p.nodes):
        return p, rep
    gate = _Gate(book)
    p = _light_copy(p)
    _reduce_heads(p, rep, gate)
    if rep.any():
        _drop_unused_params(p)
    return p, rep


# ---- small helpers ------------------------------------------------------------------------------
def _light_copy(p: Program) -> Program:
    """A copy whose graph may be edited without touching `p`; weight tensors are shared, because the
    reductions replace tensors (`_set`) and never write into them."""
    q = copy.copy(p)
    q.inputs, q.outputs, q.output_types = list(p.inputs), list(p.outputs), list(p.output_types)
    q.params, q.weights = dict(p.params), dict(p.weights)
    q.buffers = set(getattr(p, "buffers", set()))
    q.nodes = []
    for n in p.nodes:
        m = copy.copy(n)
        m.operands, m.attrs = list(n.operands), copy.deepcopy(n.attrs)
        q.nodes.append(m)
    return q


def _use_counts(p: Program) -> dict[str, int]:
    c: dict[str, int] = {}
    for n in p.nodes:
        for r in n.param_operands():
            c[r.name] = c.get(r.name, 0) + 1
    return c


def _w(p: Program, o: Any) -> torch.Tensor | None:
    return p.weights[o.name] if isinstance(o, ParamRef) else None


def _set(p: Program, o: ParamRef, t: torch.Tensor) -> None:
    p.weights[o.name] = t.contiguous()
    p.params[o.name] = TensorType.of(t)


def _retype(n: Node, last: int) -> None:
    n.type = TensorType(n.type.dtype, n.type.shape[:-1] + (last,))


def _bias(n: Node) -> Any:
    return n.operands[2] if len(n.operands) > 2 else None


def _new_param(p: Program, base: str, t: torch.Tensor) -> ParamRef:
    name, i = base, 1
    while name in p.params:
        name, i = f"{base}_{i}", i + 1
    p.weights[name] = t.contiguous()
    p.params[name] = TensorType.of(t)
    return ParamRef(name)


def _drop_unused_params(p: Program) -> None:
    used = {r.name for n in p.nodes for r in n.param_operands()}
    for name in [k for k in p.params if k not in used]:
        del p.params[name]
        p.weights.pop(name, None)
        p.buffers.discard(name)


def _zero_rows(w: torch.Tensor) -> torch.Tensor:
    return (w == 0).all(dim=1)


# ---- heads ----------------------------------------------------------------------------------------
def _safe_mask(p: Program, n: Node, types: dict[str, TensorType]) -> bool:
    """No query row can be fully masked (the value-dim fold relies on softmax rows summing to 1)."""
    mask = n.operands[3] if len(n.operands) > 3 else None
    if mask is None:
        if n.attrs.get("causal"):
            qt, kt = types[n.operands[0].name], types[n.operands[1].name]
            return qt.shape[-2] == kt.shape[-2]
        return True
    m = _w(p, mask)
    if m is None or n.attrs.get("causal"):
        return False
    ok = m if m.dtype == torch.bool else torch.isfinite(m) & (m > float("-inf"))
    return bool(ok.any(dim=-1).all())


def _reduce_heads(p: Program, rep: TransformerReport, gate: _Gate) -> None:
    by_name, users, types = p.node_map(), p.users(), p.value_types()
    uses = _use_counts(p)
    for n in p.nodes:
        if n.op != "head_attention":
            continue
        lins = [by_name.get(o.name) if isinstance(o, ValueRef) else None for o in n.operands[:3]]
        outs = users.get(n.name, [])
        if any(l is None or l.op != "linear" or len(users[l.name]) != 1 for l in lins) or len(outs) != 1:
            continue
        lo = outs[0]
        if lo.op != "linear" or lo.operands[0] != ValueRef(n.name) or len(lins) != len({l.name for l in lins}):
            continue
        lq, lk, lv = lins
        params = [o for l in (lq, lk, lv, lo) for o in l.operands[1:] if isinstance(o, ParamRef)]
        if any(uses[o.name] != 1 for o in params):
            continue
        _reduce_one_attention(p, n, lq, lk, lv, lo, _safe_mask(p, n, types), rep, gate)


def _offsets(sizes: list[int]) -> list[int]:
    out, acc = [], 0
    for s in sizes:
        out.append(acc)
        acc += s
    return out


def _reduce_one_attention(p: Program, n: Node, lq: Node, lk: Node, lv: Node, lo: Node, safe: bool,
                          rep: TransformerReport, gate: _Gate) -> None:
    qk, vd, grp = list(n.attrs["qk_dims"]), list(n.attrs["v_dims"]), list(n.attrs["head_group"])
    freq = n.attrs.get("rope_freq")
    rope = freq is not None
    wq, wk, wv, wo = _w(p, lq.operands[1]), _w(p, lk.operands[1]), _w(p, lv.operands[1]), _w(p, lo.operands[1])
    bq, bk, bv, bo = (_w(p, _bias(l)) for l in (lq, lk, lv, lo))
    q_off = _offsets([qk[g] for g in grp])
    o_off = _offsets([vd[g] for g in grp])
    k_off, v_off, f_off = _offsets(qk), _offsets(vd), _offsets([d // 2 for d in qk])
    wo_zero_col = (wo == 0).all(dim=0)  # [sum o]
    may_drop_head = gate.ok("attention.unused_head")
    may_zero_q = gate.ok("attention.zero_query_dim")
    may_const_k = gate.ok("attention.const_key_dim", "attention.zero_key_dim")
    may_fold_v = gate.ok("attention.const_value_dim", "attention.drop_value_dim")
    may_unused_v = gate.ok("attention.unused_value_dim", "attention.drop_value_dim")
    alive = [h for h in range(len(grp)) if not may_drop_head or not bool(wo_zero_col[o_off[h]:o_off[h] + vd[grp[h]]].all())]
    if not alive:  # the block's attention contributes only its bias: leave it (the engine keeps one head)
        alive = [0]
    kv = sorted({grp[h] for h in alive})
    q_zero_row = _zero_rows(wq) & (bq == 0 if bq is not None else True)
    k_zero_row = _zero_rows(wk)
    k_zero_val = k_zero_row & (bk == 0 if bk is not None else True)
    v_zero_row = _zero_rows(wv)
    new_bo = bo.clone() if bo is not None else None
    keep_qk: dict[int, torch.Tensor] = {}
    keep_v: dict[int, torch.Tensor] = {}
    folded = 0
    for g in kv:
        heads_g = [h for h in alive if grp[h] == g]
        qz = torch.stack([q_zero_row[q_off[h]:q_off[h] + qk[g]] for h in heads_g]).all(dim=0) & may_zero_q
        if rope:
            half = qk[g] // 2
            kz = k_zero_val[k_off[g]:k_off[g] + qk[g]] & may_const_k
            pair = (qz[:half] & qz[half:]) | (kz[:half] & kz[half:])
            drop_qk = torch.cat([pair, pair])
        else:
            drop_qk = qz | (k_zero_row[k_off[g]:k_off[g] + qk[g]] & may_const_k)
        if bool(drop_qk.all()):  # keep one dim so the head stays well formed (its scores are uniform anyway)
            drop_qk = drop_qk.clone()
            drop_qk[0] = False
            if rope:
                drop_qk[qk[g] // 2] = False
        keep_qk[g] = ~drop_qk
        # value dims: unused by every alive head of the group, or constant (folded) when rows are safe
        cols = torch.stack([wo_zero_col[o_off[h]:o_off[h] + vd[g]] for h in heads_g]).all(dim=0) & may_unused_v
        const = v_zero_row[v_off[g]:v_off[g] + vd[g]] & torch.tensor(safe and may_fold_v)
        cval = bv[v_off[g]:v_off[g] + vd[g]] if bv is not None else torch.zeros(vd[g], dtype=wv.dtype)
        fold = const & ~cols & (cval != 0)
        if bool(fold.any()):
            if new_bo is None:
                new_bo = torch.zeros(wo.shape[0], dtype=wo.dtype)
            for h in heads_g:
                blk = wo[:, o_off[h]:o_off[h] + vd[g]]
                new_bo = new_bo + blk[:, fold] @ cval[fold].to(wo.dtype)
            folded += int(fold.sum())
        drop_v = cols | const
        if bool(drop_v.all()):
            drop_v = drop_v.clone()
            drop_v[0] = False
        keep_v[g] = ~drop_v
    removed_heads = len(grp) - len(alive)
    removed_qk = sum(int((~keep_qk[g]).sum()) for g in kv)
    removed_v = sum(int((~keep_v[g]).sum()) for g in kv)
    if not (removed_heads or removed_qk or removed_v or len(kv) < len(qk)):
        return
    ar = torch.arange
    q_rows = torch.cat([ar(q_off[h], q_off[h] + qk[grp[h]])[keep_qk[grp[h]]] for h in alive])
    k_rows = torch.cat([ar(k_off[g], k_off[g] + qk[g])[keep_qk[g]] for g in kv])
    v_rows = torch.cat([ar(v_off[g], v_off[g] + vd[g])[keep_v[g]] for g in kv])
    o_cols = torch.cat([ar(o_off[h], o_off[h] + vd[grp[h]])[keep_v[grp[h]]] for h in alive])
    for lin, rows in ((lq, q_rows), (lk, k_rows), (lv, v_rows)):
        _set(p, lin.operands[1], p.weights[lin.operands[1].name][rows])
        if _bias(lin) is not None:
            _set(p, _bias(lin), p.weights[_bias(lin).name][rows])
        _retype(lin, int(rows.numel()))
    _set(p, lo.operands[1], wo[:, o_cols])
    if new_bo is not None:
        if bo is None:
            lo.operands = list(lo.operands[:2]) + [_new_param(p, f"{lo.operands[1].name}_folded_bias", new_bo)]
        else:
            _set(p, _bias(lo), new_bo)
    n.attrs["qk_dims"] = [int(keep_qk[g].sum()) for g in kv]
    n.attrs["v_dims"] = [int(keep_v[g].sum()) for g in kv]
    n.attrs["head_group"] = [kv.index(grp[h]) for h in alive]
    if rope:
        n.attrs["rope_freq"] = [
            int(f) for g in kv for f, k in zip(freq[f_off[g]:f_off[g] + qk[g] // 2], keep_qk[g][: qk[g] // 2]) if k
        ]
    _retype(n, int(o_cols.numel()))
    rep.heads += removed_heads
    rep.kv_heads += len(qk) - len(kv)
    rep.qk_dims += removed_qk
    rep.v_dims += removed_v
    rep.v_dims_folded += folded
