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

_ZERO_AT_ZERO = {"silu", "gelu", "relu", "tanh"}
_NORMS = {"layer_norm", "rms_norm", "compensated_layer_norm", "compensated_rms_norm"}


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
    `attention` op and on the norms, and proved there); a reduction runs only when its rules have current
    certificates. Without a RuleBook (direct calls in tests) every reduction is allowed."""

    def __init__(self, book: Any):
        self.book = book
        self.by_name = {r.name: r for r in book.ruleset.rules} if book is not None else {}

    def ok(self, *names: str) -> bool:
        if self.book is None:
            return True
        for name in names:
            r = self.by_name.get(name)
            why = "no such rule in the rule set" if r is None else self.book._status(r)
            if why is not None:
                self.book.refused[name] = why
                return False
            self.book.used[name] = r
        return True

    def find(self, p: Program, node: Node, kind: str) -> bool:
        """A certified engine rule of this kind applies to the node (attribute conditions included)."""
        if self.book is None:
            return True
        types = {("v", k): t for k, t in p.value_types().items()}
        types.update({("p", k): t for k, t in p.params.items()})
        from ..ir.checker import attrs_with_defaults
        from ..lang.loader import default_rules

        decl = self.book.ruleset.ops.get(node.op) or default_rules().ops.get(node.op)
        attrs = attrs_with_defaults(decl, node) if decl is not None else dict(node.attrs)
        return self.book.find(node, kind, types, attrs) is not None


def reduce_transformer(p: Program, book: Any = None) -> tuple[Program, TransformerReport]:
    """Apply the reductions once each (the caller iterates to a fixpoint with the channel engine).
    `book` (a minimize RuleBook) gates every reduction on the certificates of the rules that justify it."""
    rep = TransformerReport()
    if not any(n.op in ("head_attention", "mul") or n.op in _NORMS or n.op == "layer_norm_channels" for n in p.nodes):
        return p, rep
    gate = _Gate(book)
    p = _light_copy(p)
    _reduce_heads(p, rep, gate)
    _reduce_gated(p, rep, gate)
    _reduce_stream(p, rep, gate)
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


# ---- gated MLP units --------------------------------------------------------------------------------
def _reduce_gated(p: Program, rep: TransformerReport, gates: _Gate) -> None:
    by_name, users = p.node_map(), p.users()
    uses = _use_counts(p)
    for m in p.nodes:
        if m.op != "mul" or len(m.operands) != 2 or not all(isinstance(o, ValueRef) for o in m.operands):
            continue
        outs = users.get(m.name, [])
        if len(outs) != 1 or outs[0].op != "linear" or outs[0].operands[0] != ValueRef(m.name):
            continue
        down = outs[0]
        a, b = (by_name.get(o.name) for o in m.operands)
        if a is None or b is None:
            continue
        if a.op not in _ZERO_AT_ZERO and b.op in _ZERO_AT_ZERO:
            a, b = b, a
        if a.op not in _ZERO_AT_ZERO or len(users[a.name]) != 1 or b.op != "linear" or len(users[b.name]) != 1:
            continue
        gate = by_name.get(a.operands[0].name) if isinstance(a.operands[0], ValueRef) else None
        if gate is None or gate.op != "linear" or len(users[gate.name]) != 1:
            continue
        lins = (gate, b, down)
        if any(uses[o.name] != 1 for l in lins for o in l.operands[1:] if isinstance(o, ParamRef)):
            continue

        def zero_out(lin: Node) -> torch.Tensor:
            z = _zero_rows(p.weights[lin.operands[1].name])
            bias = _w(p, _bias(lin))
            return z & (bias == 0) if bias is not None else z

        # act(0) * up = 0 and gate * 0 = 0: a zero product channel; justified by the activation's and the
        # product's constant rules, the linears' dead rows and the down projection's zero fold
        if not (gates.ok(f"{a.op}.const", "mul.zero_scale")
                and (gates.find(p, down, "fold_zero") or gates.find(p, down, "fold_const"))):
            continue
        dead = zero_out(gate) | zero_out(b)
        if not bool(dead.any()) or bool(dead.all()):
            continue
        keep = ~dead
        for lin in (gate, b):
            _set(p, lin.operands[1], p.weights[lin.operands[1].name][keep])
            if _bias(lin) is not None:
                _set(p, _bias(lin), p.weights[_bias(lin).name][keep])
            _retype(lin, int(keep.sum()))
        _retype(a, int(keep.sum()))
        _retype(m, int(keep.sum()))
        _set(p, down.operands[1], p.weights[down.operands[1].name][:, keep])
        rep.gated_units += int(dead.sum())


# ---- residual stream ---------------------------------------------------------------------------------
class _UF:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, a: str) -> str:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


_STREAM_NORMS = _NORMS | {"layer_norm_channels"}


def _depthwise(n: Node, types: dict[str, TensorType]) -> bool:
    if n.op != "conv2d" or not isinstance(n.operands[0], ValueRef):
        return False
    x = types[n.operands[0].name]
    g = n.attrs.get("groups", 1)
    return g > 1 and g == x.shape[1] == n.type.shape[1] and g == n.type.shape[1]


def _norm_axis(n: Node, rank: int) -> int:
    return 1 if n.op == "layer_norm_channels" else rank - 1


def _channel_axes(p: Program, types: dict[str, TensorType]) -> dict[str, int]:
    """The channel axis of each value, from its producer and carried through layout ops."""
    ax: dict[str, int] = {}
    for n in p.nodes:
        r = n.type.rank
        vals = [o.name for o in n.value_operands()]
        src = ax.get(vals[0]) if vals else None
        a: int | None = None
        if n.op in ("linear", "embedding") or n.op in _NORMS:
            a = r - 1
        elif n.op in ("conv2d", "layer_norm_channels"):
            a = 1
        elif n.op in ("add", "sub", "mul", "cast") and src is not None:
            a = src
        elif n.op in ("add", "sub", "mul") and len(vals) > 1 and vals[1] in ax:
            a = ax[vals[1]]
        elif n.op == "permute" and src is not None:
            a = list(n.attrs["dims"]).index(src) if src in n.attrs["dims"] else None
        elif n.op == "mean" and src is not None:
            xr = types[vals[0]].rank
            red = {d % xr for d in n.attrs["dims"]}
            if src not in red:
                a = src if n.attrs.get("keepdim") else src - sum(1 for d in red if d < src)
        elif n.op == "select" and src is not None:
            d = n.attrs["dim"] % types[vals[0]].rank
            a = None if d == src else (src - 1 if d < src else src)
        elif n.op == "reshape" and src is not None:
            xt = types[vals[0]]
            if src == xt.rank - 1 and xt.shape[-1] == n.type.shape[-1]:
                a = r - 1
        if a is not None:
            ax[n.name] = a
    return ax


def _reduce_stream(p: Program, rep: TransformerReport, gate: _Gate) -> None:
    types = p.value_types()
    ax = _channel_axes(p, types)
    uf = _UF()
    role: dict[str, list[tuple[str, Node]]] = {}  # value -> [(role, node)]
    pinned: set[str] = set()

    def note(v: str, what: str, node: Node) -> None:
        role.setdefault(v, []).append((what, node))

    def width(o: Any) -> Any:
        if isinstance(o, ValueRef):
            return types[o.name].shape[ax[o.name]] if o.name in ax else None
        return None

    for n in p.nodes:
        vals = [o.name for o in n.value_operands()]
        a = ax.get(n.name)
        C = n.type.shape[a] if a is not None else None
        if n.op in ("add", "sub", "mul") and a is not None and all(ax.get(v) is not None and width(ValueRef(v)) == C for v in vals):
            ok = True
            for o in n.operands:
                if isinstance(o, ParamRef):
                    pt = p.params[o.name]
                    # the parameter must broadcast along the channel axis only at its own position
                    pa = a - (n.type.rank - pt.rank)
                    ok &= pa >= 0 and pt.shape[pa] == C
                elif not isinstance(o, (ValueRef, int, float)):
                    ok = False
            if n.op == "mul" and len(vals) != 1:
                ok = False  # a product of two streams is not channel-constant-preserving in general
            if ok:
                for v in vals:
                    uf.union(v, n.name)
                note(n.name, "sum" if n.op != "mul" else "scale", n)
                continue
        elif n.op in _STREAM_NORMS and vals and ax.get(vals[0]) == _norm_axis(n, n.type.rank):
            uf.union(vals[0], n.name)
            note(n.name, "norm", n)
            continue
        elif n.op in ("cast", "mean", "select", "permute", "reshape") and a is not None and vals and vals[0] in ax:
            uf.union(vals[0], n.name)
            note(n.name, "pass", n)
            continue
        elif _depthwise(n, types) and ax.get(vals[0]) == 1:
            uf.union(vals[0], n.name)
            note(n.name, "depthwise", n)
            continue
        elif (n.op == "linear" and ax.get(vals[0]) == types[vals[0]].rank - 1) or (
            n.op == "conv2d" and n.attrs.get("groups", 1) == 1 and ax.get(vals[0]) == 1
        ):
            note(vals[0], "consumer", n)
            note(n.name, "producer", n)
            continue
        elif n.op in ("linear", "conv2d", "embedding"):
            note(n.name, "producer", n)
            for v in vals:
                pinned.add(v)
            continue
        for v in vals:  # any other reader keeps the channels of what it reads
            pinned.add(v)
        pinned.add(n.name)
    for name, _ in p.inputs:
        pinned.add(name)
    for o in p.outputs:
        pinned.add(o)
    groups: dict[str, list[str]] = {}
    for n in p.nodes:
        if n.name in ax:
            groups.setdefault(uf.find(n.name), []).append(n.name)
    by_name = p.node_map()
    uses = _use_counts(p)
    for root, members in groups.items():
        if len(members) < 2 or any(v in pinned for v in members):
            continue
        if not any(by_name[v].op in _STREAM_NORMS for v in members):
            continue  # plain linear chains are the channel engine's business
        _reduce_group(p, members, by_name, role, uses, ax, rep, gate)


def _uniform(t: torch.Tensor, axis: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel (along `axis`): whether t is the same at every other index, and that value."""
    t = t.movedim(axis, -1)
    flat = t.reshape(-1, t.shape[-1]).double()
    return (flat == flat[:1]).all(dim=0), flat[0]


def _filter_zero(w: torch.Tensor) -> torch.Tensor:
    return (w.reshape(w.shape[0], -1) == 0).all(dim=1)


def _retype_axis(n: Node, axis: int, size: int) -> None:
    shape = list(n.type.shape)
    shape[axis] = size
    n.type = TensorType(n.type.dtype, tuple(shape))


def _reduce_group(p: Program, members: list[str], by_name: dict[str, Node], role: dict, uses: dict[str, int],
                  ax: dict[str, int], rep: TransformerReport, gate: _Gate) -> None:
    member_set = set(members)
    first = by_name[members[0]]
    C = int(first.type.shape[ax[members[0]]])
    known: dict[str, torch.Tensor] = {}
    value: dict[str, torch.Tensor] = {}
    norm_in: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    must_be_zero = torch.zeros(C, dtype=torch.bool)  # channels read by a zero-padded spatial op
    consumers: list[Node] = []
    ones = torch.ones(C, dtype=torch.bool)
    for v in members:  # topological order
        n = by_name[v]
        a = ax[v]
        k = torch.zeros(C, dtype=torch.bool)
        val = torch.zeros(C, dtype=torch.float64)
        if n.op in ("linear", "conv2d") and not (n.op == "conv2d" and n.operands[0].name in member_set):
            w, b = _w(p, n.operands[1]), _w(p, _bias(n))
            if w is None or uses[n.operands[1].name] != 1:
                return
            k = _filter_zero(w)
            val = b.double() if b is not None else val
        elif n.op == "conv2d":  # depthwise: channel-local
            x = n.operands[0].name
            w, b = _w(p, n.operands[1]), _w(p, _bias(n))
            if w is None:
                return
            padded = any(int(q) != 0 for q in n.attrs.get("padding", [0, 0]))
            if padded:
                must_be_zero |= ~known[x] | (value[x] != 0)
            k = known[x].clone()
            val = value[x] * w.reshape(C, -1).double().sum(1) + (b.double() if b is not None else 0.0)
        elif n.op == "embedding":
            w = _w(p, n.operands[0])
            if w is None:
                return
            k, val = _uniform(w)
        elif n.op in ("add", "sub"):
            parts = []
            for o in n.operands:
                if isinstance(o, ValueRef):
                    if o.name not in member_set:
                        return
                    parts.append((known[o.name], value[o.name]))
                elif isinstance(o, ParamRef):
                    parts.append(_uniform(p.weights[o.name], a - (n.type.rank - p.params[o.name].rank)))
                elif isinstance(o, (int, float)):
                    parts.append((ones, torch.full((C,), float(o), dtype=torch.float64)))
                else:
                    return
            (ka, va), (kb, vb) = parts
            k = ka & kb
            val = va + vb if n.op == "add" else va - vb
        elif n.op == "mul":
            x = next(o.name for o in n.operands if isinstance(o, ValueRef))
            other = next(o for o in n.operands if not isinstance(o, ValueRef))
            if isinstance(other, ParamRef):
                ku, g = _uniform(p.weights[other.name], a - (n.type.rank - p.params[other.name].rank))
                if not bool(ku.all()):
                    return
            else:
                g = torch.full((C,), float(other), dtype=torch.float64)
            k = known[x] | (g == 0)
            val = torch.where(g == 0, torch.zeros_like(g), value[x] * g)
        elif n.op in _STREAM_NORMS:
            x = n.operands[0].name
            norm_in[v] = (known[x], value[x])
            w = _w(p, n.operands[1]) if len(n.operands) > 1 else None
            b = _w(p, n.operands[2]) if "layer_norm" in n.op and len(n.operands) > 2 else None
            if w is None:
                return
            k = w == 0
            val = b.double() if b is not None else val
        else:  # pass-through ops
            x = n.operands[0].name
            k, val = known[x].clone(), value[x].clone()
        known[v], value[v] = k, torch.where(k, val, torch.zeros_like(val))
    for v in members:
        for what, node in role.get(v, []):
            if what == "consumer":
                if _w(p, node.operands[1]) is None:
                    return
                consumers.append(node)
    removable = torch.ones(C, dtype=torch.bool)
    for v in members:
        removable &= known[v]
    for v, (ki, _) in norm_in.items():
        removable &= ki
    removable &= ~must_be_zero
    for node in consumers:  # a zero-padded consumer conv absorbs only zero constants
        if node.op == "conv2d" and any(int(q) != 0 for q in node.attrs.get("padding", [0, 0])):
            removable &= value[node.operands[0].name] == 0
    if not bool(removable.any()):
        return
    if not _group_certified(p, members, by_name, consumers, value, removable, gate):
        return
    if bool(removable.all()):
        removable = removable.clone()
        removable[0] = False  # keep one channel: a zero-width stream is not a network
    keep = ~removable
    K = int(keep.sum())
    keep_idx = torch.nonzero(keep).flatten()
    # a parameter sliced here must not be read anywhere else (tied weights: every reader is in the group)
    inside = {id(by_name[v]) for v in members} | {id(c) for c in consumers}
    sliced = [o.name for v in members for o in by_name[v].param_operands()]
    sliced += [c.operands[1].name for c in consumers]
    for n in p.nodes:
        if id(n) not in inside and any(r.name in sliced for r in n.param_operands()):
            return
    done_params: set[str] = set()

    def slice_param(ref: ParamRef, axis: int) -> None:
        key = f"{ref.name}#{axis}"
        if key in done_params:
            return
        done_params.add(key)
        t = p.weights[ref.name]
        _set(p, ref, t.index_select(axis % t.dim(), keep_idx))

    for node in consumers:  # fold constants into the readers' biases, before their columns go
        w = p.weights[node.operands[1].name]
        const = value[node.operands[0].name][removable].to(w.dtype)
        cols = w[:, removable]
        if node.op == "conv2d":
            cols = cols.reshape(cols.shape[0], cols.shape[1], -1).sum(-1)
        fold = cols @ const
        b = _bias(node)
        if b is not None:
            _set(p, b, p.weights[b.name] + fold)
        elif bool((fold != 0).any()):
            node.operands = list(node.operands[:2]) + [_new_param(p, f"{node.operands[1].name}_folded_bias", fold)]
    for node in consumers:
        slice_param(node.operands[1], 1)
    extra: dict[str, list[Node]] = {}
    for v in members:
        n = by_name[v]
        a = ax[v]
        if n.op in ("linear", "conv2d"):
            slice_param(n.operands[1], 0)
            if _bias(n) is not None:
                slice_param(_bias(n), 0)
            if _depthwise(n, {**p.value_types()}) or (n.op == "conv2d" and n.operands[0].name in member_set):
                n.attrs["groups"] = K
        elif n.op == "embedding":
            slice_param(n.operands[0], 1)
        elif n.op in ("add", "sub", "mul"):
            for o in n.operands:
                if isinstance(o, ParamRef):
                    slice_param(o, a - (n.type.rank - p.params[o.name].rank))
        elif n.op in _STREAM_NORMS:
            ki, vi = norm_in[v]
            r = vi[removable]
            s1, s2 = float(r.sum()), float((r * r).sum())
            w = n.operands[1]
            slice_param(w, 0)
            if "layer_norm" in n.op:
                b = n.operands[2] if len(n.operands) > 2 else None
                if b is not None:
                    slice_param(b, 0)
                prev = n.attrs if n.op == "compensated_layer_norm" else {"n_total": C, "s1": 0.0, "s2": 0.0}
                attrs = {"n_total": int(prev["n_total"]), "s1": float(prev.get("s1", 0.0)) + s1,
                         "s2": float(prev.get("s2", 0.0)) + s2, "eps": float(n.attrs.get("eps", 1e-5))}
                if n.op == "layer_norm_channels":
                    extra[v] = _channels_last_compensated(n, [n.operands[0], w, b], attrs, K)
                else:
                    n.attrs = attrs
                    n.operands = [n.operands[0], w, b]
                    n.op = "compensated_layer_norm"
            else:
                prev = n.attrs if n.op == "compensated_rms_norm" else {"n_total": C, "s2": 0.0}
                n.attrs = {"n_total": int(prev["n_total"]), "s2": float(prev.get("s2", 0.0)) + s2,
                           "eps": n.attrs.get("eps")}
                n.operands = [n.operands[0], w]
                n.op = "compensated_rms_norm"
            if v not in rep.norms_compensated:
                rep.norms_compensated.append(v)
        elif n.op == "reshape":
            n.attrs["shape"] = list(n.attrs["shape"][:-1]) + [K]
        _retype_axis(n, a, K)
    if extra:
        out: list[Node] = []
        for n in p.nodes:
            out.extend(extra.get(n.name, [n]))
        p.nodes = out
    rep.residual_channels += int(removable.sum())


def _channels_last_compensated(n: Node, operands: list[Any], attrs: dict[str, Any], K: int) -> list[Node]:
    """layer_norm_channels (axis 1) compensated: permute to channels-last, compensated_layer_norm, permute
    back (the node keeps its name, so its readers are unchanged)."""
    rank = n.type.rank
    t = n.type
    shape = list(t.shape)
    shape[1] = K
    last = [shape[0], *shape[2:], K]
    to_last = [0, *range(2, rank), 1]
    to_first = [0, rank - 1, *range(1, rank - 1)]
    a_name, b_name = f"{n.name}_cl", f"{n.name}_cln"
    dt = t.dtype
    return [
        Node(a_name, "permute", [operands[0]], {"dims": to_last}, TensorType(dt, tuple(last)), n.loc, n.origin),
        Node(b_name, "compensated_layer_norm", [ValueRef(a_name), operands[1], operands[2]], attrs,
             TensorType(dt, tuple(last)), n.loc, n.origin),
        Node(n.name, "permute", [ValueRef(b_name)], {"dims": to_first}, TensorType(dt, tuple(shape)), n.loc, n.origin),
    ]


_NORM_RULES = {
    "layer_norm": ("layer_norm.zero_gamma", "layer_norm.compensate"),
    "layer_norm_channels": ("layer_norm.zero_gamma", "layer_norm.compensate"),
    "compensated_layer_norm": ("compensated_layer_norm.zero_gamma", "compensated_layer_norm.compose"),
    "rms_norm": ("rms_norm.zero_gamma", "rms_norm.compensate"),
    "compensated_rms_norm": ("rms_norm.zero_gamma", "compensated_rms_norm.compose"),
}


def _group_certified(p: Program, members: list[str], by_name: dict[str, Node], consumers: list[Node],
                     value: dict[str, torch.Tensor], removable: torch.Tensor, gate: _Gate) -> bool:
    """The rules behind removing these stream channels are certified: each norm's zero-gamma and
    compensation rules, each writer's dead-row rule, each channel-local op's rule, each reader's fold."""
    for v in members:
        n = by_name[v]
        if n.op in _NORM_RULES:
            if not gate.ok(*_NORM_RULES[n.op]):
                return False
        elif n.op == "embedding":
            if not gate.ok("embedding.const_column"):
                return False
        elif n.op == "conv2d" and n.attrs.get("groups", 1) > 1:
            if not gate.ok("conv2d.depthwise_zero"):
                return False
        elif n.op in ("linear", "conv2d"):
            if not gate.find(p, n, "dead_row"):
                return False
        elif n.op == "mul":
            if not gate.ok("mul.zero_scale", "mul.const_scale"):
                return False
        elif n.op in ("add", "sub"):
            if not gate.ok(f"{n.op}.const"):
                return False
    for c in consumers:
        zero = bool((value[c.operands[0].name][removable] == 0).all())
        # a zero constant may also go by the general fold (linear has no separate zero rule)
        if not ((zero and gate.find(p, c, "fold_zero")) or gate.find(p, c, "fold_const")):
            return False
    return True
