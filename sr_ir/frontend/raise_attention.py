"""Raise transformer idioms of a lowered Program into ops with explicit structure.

- Attention: the q/k/v projections' outputs, viewed to heads and transposed, optionally rotated (RoPE,
  rotate-half, with constant cos/sin tables), optionally repeated for grouped-query attention
  (`repeat_kv`: unsqueeze, expand, reshape), fed to scaled_dot_product_attention, transposed back and
  flattened  ==>  one `head_attention` node (rules/ops/transformer.rules) over the flat q, k, v, with
  per-head widths, the key/value head of each query head, an explicit scale and RoPE frequencies.
- RMSNorm: w * (x * rsqrt(mean(x^2, -1) + eps))  ==>  `rms_norm`.

Patterns that do not match exactly are left alone (the plain ops still lower, emit and run); a raise
never changes the function, only its structure, and each replaced node keeps its name and type.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..ir.program import Node, ParamRef, Program, ValueRef
from ..ir.types import TensorType, dims_equal
from ..lang.loader import RuleSet


def raise_attention(p: Program, rules: RuleSet) -> Program:
    """Apply the transformer raises (RMSNorm, attention) where the ops they need are declared."""
    if "rms_norm" in rules.ops:
        p = _raise_rms_norm(p)
    if "head_attention" in rules.ops:
        p = _raise_attention(p)
    return p


# ---- helpers over the graph ------------------------------------------------------------------
class _Graph:
    def __init__(self, p: Program):
        self.p = p
        self.by_name = p.node_map()
        self.users = p.users()
        self.types = p.value_types()

    def producer(self, o: Any) -> Node | None:
        return self.by_name.get(o.name) if isinstance(o, ValueRef) else None

    def only_user(self, name: str) -> Node | None:
        us = self.users.get(name, [])
        return us[0] if len(us) == 1 else None

    def const(self, o: Any) -> torch.Tensor | None:
        if isinstance(o, ParamRef):
            return self.p.weights.get(o.name)
        return None


def _is(n: Node | None, op: str) -> bool:
    return n is not None and n.op == op


# ---- RMSNorm ---------------------------------------------------------------------------------
def _raise_rms_norm(p: Program) -> Program:
    g = _Graph(p)
    replace: dict[str, Node] = {}
    for n in p.nodes:
        if n.op != "mul" or len(n.operands) != 2:
            continue
        # n = w * normed (either order), normed = x * rsqrt(mean(x^2) + eps) (either order)
        for wi in (0, 1):
            w, normed = n.operands[wi], n.operands[1 - wi]
            inner = g.producer(normed)
            if not isinstance(w, ParamRef) or not _is(inner, "mul") or g.only_user(inner.name) is not n:
                continue
            m = _match_rms(g, inner)
            if m is None:
                continue
            x, eps = m
            xt = g.types[x.name] if isinstance(x, ValueRef) else None
            wt = p.params[w.name]
            if xt is None or wt.rank != 1 or not dims_equal(wt.shape[0], xt.shape[-1]):
                continue
            replace[n.name] = Node(n.name, "rms_norm", [x, w], {"eps": eps}, n.type, n.loc, n.origin)
            break
    if replace:
        p.nodes = [replace.get(n.name, n) for n in p.nodes]
    return p


def _match_rms(g: _Graph, inner: Node) -> tuple[ValueRef, float] | None:
    for xi in (0, 1):
        x, r = inner.operands[xi], inner.operands[1 - xi]
        rs = g.producer(r)
        if not isinstance(x, ValueRef) or not _is(rs, "rsqrt"):
            continue
        add = g.producer(rs.operands[0])
        if not _is(add, "add"):
            continue
        eps = next((o for o in add.operands if isinstance(o, (int, float))), None)
        mean = next((g.producer(o) for o in add.operands if isinstance(o, ValueRef)), None)
        if eps is None or not _is(mean, "mean") or not mean.attrs.get("keepdim"):
            continue
        rank = g.types[x.name].rank
        if [d % rank for d in mean.attrs["dims"]] != [rank - 1]:
            continue
        sq = g.producer(mean.operands[0])
        if _is(sq, "pow") and sq.attrs.get("exponent") == 2.0 and sq.operands[0] == x:
            return x, float(eps)
        if _is(sq, "mul") and sq.operands[0] == x and sq.operands[1] == x:
            return x, float(eps)
    return None


# ---- attention -------------------------------------------------------------------------------
@dataclass
class _Heads:
    flat: ValueRef  # [*B, L, heads * width]
    heads: int
    width: int


def _unheads(g: _Graph, o: Any) -> _Heads | None:
    """o = permute(reshape(flat, [*B, L, H, D]), swap -3/-2): the flat projection output and H, D."""
    perm = g.producer(o)
    if not _is(perm, "permute"):
        return None
    r = perm.type.rank
    if r < 3 or perm.attrs["dims"] != [*range(r - 3), r - 2, r - 3, r - 1]:
        return None
    view = g.producer(perm.operands[0])
    if not _is(view, "reshape") or not isinstance(view.operands[0], ValueRef):
        return None
    flat = view.operands[0]
    ft, vt = g.types[flat.name], view.type
    if vt.rank != ft.rank + 1 or not all(dims_equal(a, b) for a, b in zip(vt.shape[:-2], ft.shape[:-1])):
        return None
    h, d = vt.shape[-2], vt.shape[-1]
    if not (isinstance(h, int) and isinstance(d, int)) or not dims_equal(ft.shape[-1], h * d):
        return None
    return _Heads(flat, h, d)


def _unrepeat(g: _Graph, o: Any) -> tuple[Any, int]:
    """o = reshape(expand(reshape(t, [.., G, 1, S, D]), [.., G, R, S, D]), [.., G*R, S, D]) -> (t, R)."""
    out = g.producer(o)
    if not _is(out, "reshape"):
        return o, 1
    ex = g.producer(out.operands[0])
    if not _is(ex, "expand"):
        return o, 1
    un = g.producer(ex.operands[0])
    if not _is(un, "reshape") or not isinstance(un.operands[0], ValueRef):
        return o, 1
    t = un.operands[0]
    tt, ut, et = g.types[t.name], un.type, ex.type
    r = tt.rank
    ok = (
        ut.rank == r + 1
        and ut.shape[-3] == 1
        and all(dims_equal(a, b) for a, b in zip(ut.shape[: r - 2], tt.shape[: r - 2]))
        and all(dims_equal(a, b) for a, b in zip(ut.shape[-2:], tt.shape[-2:]))
        and et.rank == r + 1
        and all(dims_equal(a, b) for i, (a, b) in enumerate(zip(et.shape, ut.shape)) if i != r - 2)
        and isinstance(et.shape[-3], int)
        and out.type.rank == r
        and dims_equal(out.type.shape[-3], tt.shape[-3] * et.shape[-3])
    )
    return (t, int(et.shape[-3])) if ok else (o, 1)


@dataclass
class _Rope:
    src: ValueRef
    cos: Any
    sin: Any


def _unrope(g: _Graph, o: Any) -> _Rope | None:
    """o = t * cos + concat(-t[..., D/2:], t[..., :D/2]) * sin (either order of each product and the sum)."""
    add = g.producer(o)
    if not _is(add, "add") or len(add.operands) != 2:
        return None
    for a, b in ((0, 1), (1, 0)):
        m1, m2 = g.producer(add.operands[a]), g.producer(add.operands[b])
        if not (_is(m1, "mul") and _is(m2, "mul")):
            continue
        for i in (0, 1):
            t, cos = m1.operands[i], m1.operands[1 - i]
            if not isinstance(t, ValueRef):
                continue
            for j in (0, 1):
                rot, sin = g.producer(m2.operands[j]), m2.operands[1 - j]
                if _is(rot, "concat") and _rotate_half_of(g, rot, t):
                    return _Rope(t, cos, sin)
    return None


def _rotate_half_of(g: _Graph, cat: Node, t: ValueRef) -> bool:
    tt = g.types[t.name]
    d = tt.shape[-1]
    if len(cat.operands) != 2 or cat.attrs["dim"] % tt.rank != tt.rank - 1 or not isinstance(d, int) or d % 2:
        return False
    neg, lo = g.producer(cat.operands[0]), g.producer(cat.operands[1])
    if not (_is(neg, "neg") and _is(lo, "slice")):
        return False
    hi = g.producer(neg.operands[0])
    half = d // 2

    def is_slice(n: Node | None, start: int, end: int) -> bool:
        return (
            _is(n, "slice") and n.operands[0] == t and n.attrs["dim"] % tt.rank == tt.rank - 1
            and n.attrs["start"] == start and n.attrs["end"] == end and n.attrs.get("step", 1) == 1
        )

    return is_slice(hi, half, d) and is_slice(lo, 0, half)


def _rope_table(g: _Graph, o: Any, width: int, new_nodes: list[Node], base: str) -> Any:
    """A constant cos/sin table [..., 1 (heads), L, width] whose halves agree, as a [..., L, width] operand."""
    t = g.const(o)
    if t is None or t.dim() < 3 or t.shape[-1] != width or t.shape[-3] != 1:
        return None
    if not torch.equal(t[..., : width // 2], t[..., width // 2 :]):
        return None
    tt = g.p.params[o.name]
    shape = list(tt.shape[:-3]) + list(tt.shape[-2:])
    name = _fresh(g, base)
    new_nodes.append(Node(name, "reshape", [o], {"shape": shape}, TensorType(tt.dtype, tuple(shape))))
    return ValueRef(name)


def _same_table(g: _Graph, a: Any, b: Any) -> bool:
    if a == b:
        return True
    ta, tb = g.const(a), g.const(b)
    return ta is not None and tb is not None and ta.shape == tb.shape and torch.equal(ta, tb)


def _fresh(g: _Graph, base: str) -> str:
    name, i = base, 1
    while name in g.types:
        name = f"{base}_{i}"
        i += 1
    g.types[name] = None  # reserve
    return name


def _raise_attention(p: Program) -> Program:
    g = _Graph(p)
    replace: dict[str, Node] = {}
    before: dict[str, list[Node]] = {}
    for n in p.nodes:
        if n.op != "scaled_dot_product_attention":
            continue
        new = _raise_one(g, n)
        if new is not None:
            anchor, node, extra = new
            replace[anchor] = node
            before[anchor] = extra
    if not replace:
        return p
    out: list[Node] = []
    for n in p.nodes:
        if n.name in replace:
            out.extend(before[n.name])
            out.append(replace[n.name])
        else:
            out.append(n)
    p.nodes = out
    return p


def _raise_one(g: _Graph, sdpa: Node) -> tuple[str, Node, list[Node]] | None:
    # output side: (identity reshapes,) permute back (swap -3/-2), then flatten the heads
    back = g.only_user(sdpa.name)
    while _is(back, "reshape") and back.type == g.types[back.operands[0].name]:
        back = g.only_user(back.name)
    if not _is(back, "permute"):
        return None
    r = back.type.rank
    if back.attrs["dims"] != [*range(r - 3), r - 2, r - 3, r - 1]:
        return None
    flat_out = g.only_user(back.name)
    if not _is(flat_out, "reshape") or flat_out.type.rank != r - 1:
        return None
    if not all(dims_equal(a, b) for a, b in zip(flat_out.type.shape[:-1], back.type.shape[:-2])):
        return None
    q_op, k_op, v_op = sdpa.operands[:3]
    mask = sdpa.operands[3] if len(sdpa.operands) > 3 else None
    k_src, rep_k = _unrepeat(g, k_op)
    v_src, rep_v = _unrepeat(g, v_op)
    if rep_k != rep_v:
        return None
    rq, rk = _unrope(g, q_op), _unrope(g, k_src)
    if (rq is None) != (rk is None):
        return None
    if rq is not None:
        q_op, k_src = rq.src, rk.src
    q, k, v = _unheads(g, q_op), _unheads(g, k_src), _unheads(g, v_src)
    if q is None or k is None or v is None:
        return None
    if q.width != k.width or q.heads != k.heads * rep_k or k.heads != v.heads:
        return None
    if not dims_equal(flat_out.type.shape[-1], q.heads * v.width):
        return None
    extra: list[Node] = []
    attrs: dict[str, Any] = {
        "qk_dims": [k.width] * k.heads,
        "v_dims": [v.width] * v.heads,
        "head_group": [h // rep_k for h in range(q.heads)],
        "causal": bool(sdpa.attrs.get("causal", False)),
        # explicit: removing query/key dims later must not change the softmax temperature
        "scale": float(sdpa.attrs["scale"]) if sdpa.attrs.get("scale") is not None else 1.0 / k.width**0.5,
    }
    cos = sin = None
    if rq is not None:
        if not (_same_table(g, rq.cos, rk.cos) and _same_table(g, rq.sin, rk.sin)):
            return None
        cos = _rope_table(g, rq.cos, k.width, extra, f"{flat_out.name}_rope_cos")
        sin = _rope_table(g, rq.sin, k.width, extra, f"{flat_out.name}_rope_sin")
        if cos is None or sin is None:
            return None
        attrs["rope_freq"] = list(range(k.width // 2)) * k.heads
    operands = [q.flat, k.flat, v.flat, mask, cos, sin]
    while operands and operands[-1] is None:
        operands.pop()
    node = Node(flat_out.name, "head_attention", operands, attrs, flat_out.type, flat_out.loc, sdpa.origin)
    return flat_out.name, node, extra
