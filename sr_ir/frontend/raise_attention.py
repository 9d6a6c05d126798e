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

import re
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
        if "bmm" in rules.ops and "scaled_dot_product_attention" in rules.ops:
            p = _raise_math_attention(p)
        p = _raise_attention(p)
    if "gelu" in rules.ops:
        p = _raise_gelu_tanh(p)
    return p


# ---- GELU, tanh approximation (GPT-2's gelu_new written out) -----------------------------------------
def _scalar_mul(g: _Graph, o: Any, c: float, tol: float = 1e-9) -> Any:
    """o = mul(x, c) (either order): x, else None."""
    n = g.producer(o)
    if not _is(n, "mul") or len(n.operands) != 2:
        return None
    a, b = n.operands
    if isinstance(b, (int, float)) and abs(b - c) <= tol * abs(c) and isinstance(a, ValueRef):
        return a
    if isinstance(a, (int, float)) and abs(a - c) <= tol * abs(c) and isinstance(b, ValueRef):
        return b
    return None


def _raise_gelu_tanh(p: Program) -> Program:
    """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))  ==>  gelu(x, approximate="tanh")."""
    g = _Graph(p)
    replace: dict[str, Node] = {}
    for n in p.nodes:
        if n.op != "mul" or len(n.operands) != 2 or not all(isinstance(o, ValueRef) for o in n.operands):
            continue
        for i in (0, 1):
            x = _scalar_mul(g, n.operands[i], 0.5)
            one = g.producer(n.operands[1 - i])
            if x is None or not _is(one, "add") or 1.0 not in [o for o in one.operands if isinstance(o, (int, float))]:
                continue
            th = next((g.producer(o) for o in one.operands if isinstance(o, ValueRef)), None)
            if not _is(th, "tanh"):
                continue
            inner = _scalar_mul(g, th.operands[0], (2.0 / 3.141592653589793) ** 0.5)
            add = g.producer(inner) if inner is not None else None
            if not _is(add, "add") or x not in add.operands:
                continue
            other = next((o for o in add.operands if o != x), None)
            cube = g.producer(_scalar_mul(g, other, 0.044715)) if other is not None else None
            if _is(cube, "pow") and cube.attrs.get("exponent") == 3.0 and cube.operands[0] == x:
                replace[n.name] = Node(n.name, "gelu", [x], {"approximate": "tanh"}, n.type, n.loc, n.origin)
                break
    if replace:
        p.nodes = [replace.get(n.name, n) for n in p.nodes]
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
        if new is None:
            new = _raise_layout_attention(g, n)
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
    if rq is None and rep_k == 1 and not all(_is(g.producer(h.flat), "linear") for h in (q, k, v)):
        return None  # a packed projection (GPT-2's c_attn + split): the layout route splits it
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


# ---- attention behind arbitrary layout ops (nn.MultiheadAttention and friends) ----------------------
# PyTorch's nn.MultiheadAttention projects with one packed in_proj, moves axes around (sequence-first,
# unflatten, select, views that merge batch and heads) before scaled_dot_product_attention, and back
# again before out_proj. Instead of matching each spelling, the layout chain is replayed on a tensor of
# element ids: if the ids reaching the attention are exactly "token-major projection output, split into
# heads", the chain is a pure relabelling and can be replaced by explicit heads.
_LAYOUT = {"reshape", "permute", "select", "slice"}


def _concrete(shape: tuple, sizes: dict) -> list[int]:
    out = []
    for d in shape:
        out.append(int(d) if isinstance(d, int) else int(d.subs(sizes)))
    return out


def _replay(n: Node, t: torch.Tensor, sizes: dict) -> torch.Tensor:
    if n.op == "reshape":
        return t.reshape(_concrete(n.type.shape, sizes))
    if n.op == "permute":
        return t.permute(n.attrs["dims"])
    if n.op == "select":
        return t.select(n.attrs["dim"], n.attrs["index"])
    if n.op == "expand":
        return t.expand(_concrete(tuple(n.attrs["shape"]), sizes))
    a = n.attrs
    idx = [slice(None)] * t.dim()
    idx[a["dim"]] = slice(a["start"], a["end"], a.get("step", 1))
    return t[tuple(idx)]


def _chain_back(g: _Graph, o: Any, stop: Any = None) -> tuple[Any, list[Node]]:
    """Walk producers through layout ops; returns the first non-layout value and the chain (source first)."""
    chain: list[Node] = []
    while isinstance(o, ValueRef) and o != stop:
        n = g.producer(o)
        if n is None or n.op not in _LAYOUT or not isinstance(n.operands[0], ValueRef):
            break
        chain.append(n)
        o = n.operands[0]
    return o, list(reversed(chain))


def _sizes(g: _Graph) -> dict:
    syms = set()
    for t in g.types.values():
        if t is not None:
            for d in t.shape:
                if not isinstance(d, int):
                    syms |= d.free_symbols
    # distinct small primes make accidental coincidences of merged axes impossible to miss
    return {s: p for s, p in zip(sorted(syms, key=str), (3, 5, 7, 11, 13, 17))}


@dataclass
class _Proj:
    x0: ValueRef  # projection input, token-major [B, L, E_in]
    lin: Node  # the (possibly packed) projection
    offset: int  # first output channel of this operand's block
    heads: int
    width: int
    seq_first: bool = False  # x0 is [L, B, E_in] (PyTorch's sequence-first layout)


def _find_projection(g: _Graph, t: Any, sizes: dict) -> _Proj | None:
    """t: an attention operand [B, H, L, D] reached from a linear's output through layout ops only."""
    src, chain = _chain_back(g, t)
    lin = g.producer(src)
    if not _is(lin, "linear") or not isinstance(lin.operands[0], ValueRef) or not chain:
        return None
    tt = g.types[t.name] if isinstance(t, ValueRef) else None
    if tt is None or tt.rank != 4:
        return None
    B, H, L, D = _concrete(tt.shape, sizes)
    e_out = int(lin.type.shape[-1])
    # the projection's input: back through leading-axis layout ops to a [B, L, E_in] value
    xl = lin.operands[0]
    e_in = g.types[xl.name].shape[-1]
    x0, pre = _chain_back(g, xl)
    candidates = [x0] + [ValueRef(n.name) for n in pre]
    for cand, seq_first in [(c, sf) for c in candidates for sf in (False, True)]:
        ct = g.types[cand.name]
        if ct.rank != 3 or _concrete(ct.shape, sizes) != ([L, B] if seq_first else [B, L]) + [int(e_in)]:
            continue
        _, sub = _chain_back(g, xl, stop=cand)
        ids_in = torch.arange(B * L * int(e_in)).reshape(B, L, int(e_in))
        if seq_first:
            ids_in = ids_in.transpose(0, 1)
        z = ids_in
        for n in sub:
            z = _replay(n, z, sizes)
        rows = z.reshape(-1, int(e_in))
        if not torch.equal(rows - rows[:, :1], torch.arange(int(e_in)).expand_as(rows)):
            continue  # the chain touched the channel axis
        token = rows[:, 0] // int(e_in)
        y_ids = torch.arange(B * L * e_out).reshape(B * L, e_out)[token].reshape(list(z.shape[:-1]) + [e_out])
        for n in chain:
            y_ids = _replay(n, y_ids, sizes)
        off = int(y_ids.flatten()[0]) % e_out
        if off + H * D > e_out:
            continue
        want = torch.arange(B * L * e_out).reshape(B, L, e_out)[..., off : off + H * D]
        want = want.reshape(B, L, H, D).transpose(1, 2)
        if y_ids.shape == want.shape and torch.equal(y_ids, want):
            return _Proj(cand, lin, off, H, D, seq_first)
    return None


def _project(g: _Graph, p: _Proj, tag: str, extra: list[Node]) -> ValueRef:
    """A linear over the token-major input producing just this operand's channels (a packed projection's
    weight and bias are split into per-operand parameters)."""
    lin = p.lin
    w, b = lin.operands[1], lin.operands[2] if len(lin.operands) > 2 else None
    e_out = int(lin.type.shape[-1])
    n = p.heads * p.width
    if p.offset != 0 or n != e_out:
        w = _param_slice(g, w, p.offset, n, tag)
        b = _param_slice(g, b, p.offset, n, tag) if b is not None else None
    x0, x0t = p.x0, g.types[p.x0.name]
    if p.seq_first:  # token-major view of a sequence-first input
        tm = TensorType(x0t.dtype, (x0t.shape[1], x0t.shape[0], x0t.shape[2]))
        pname = _fresh(g, f"{p.x0.name}_batch_first")
        extra.append(Node(pname, "permute", [x0], {"dims": [1, 0, 2]}, tm, lin.loc, lin.origin))
        g.types[pname] = tm
        x0, x0t = ValueRef(pname), tm
    name = _fresh(g, f"{lin.name}_{tag}")
    t = TensorType(lin.type.dtype, tuple(x0t.shape[:-1]) + (n,))
    extra.append(Node(name, "linear", [x0, w] + ([b] if b is not None else []), {}, t, lin.loc, lin.origin))
    g.types[name] = t
    return ValueRef(name)


def _param_slice(g: _Graph, ref: ParamRef, start: int, n: int, tag: str) -> ParamRef:
    base = re.sub(r"in_proj_(weight|bias)$", lambda m: f"{tag}_proj_{m.group(1)}", ref.name)
    if base == ref.name:
        base = f"{ref.name}_{tag}"
    # always a new parameter: two layers' slices may hold equal values but are independent weights
    name, i = base, 1
    while name in g.p.params:
        name, i = f"{base}_{i}", i + 1
    g.p.weights[name] = g.p.weights[ref.name][start : start + n].clone()
    g.p.params[name] = TensorType.of(g.p.weights[name])
    if ref.name in g.p.buffers:
        g.p.buffers.add(name)
    return ParamRef(name)


def _head_free_mask(g: _Graph, mask: ValueRef, sizes: dict) -> ValueRef | None:
    """mask [B, H, L, S] = layout/expand ops of m0 [B, 1, L', S] repeating it for every head: m0, else None."""
    if not isinstance(mask, ValueRef):
        return None
    chain: list[Node] = []
    o = mask
    while True:
        n = g.producer(o)
        if n is None or n.op not in _LAYOUT | {"expand"} or not isinstance(n.operands[0], ValueRef):
            return None
        chain.append(n)
        o = n.operands[0]
        t = g.types[o.name]
        if t.rank == 4 and dims_equal(t.shape[1], 1):
            break
    shape = _concrete(t.shape, sizes)
    ids = torch.arange(int(torch.tensor(shape).prod())).reshape(shape)
    cur = ids
    for n in reversed(chain):
        cur = _replay(n, cur, sizes)
    want = ids.expand(_concrete(g.types[mask.name].shape, sizes))
    return o if cur.shape == want.shape and torch.equal(cur, want) else None


def _raise_layout_attention(g: _Graph, sdpa: Node) -> tuple[str, Node, list[Node]] | None:
    sizes = _sizes(g)
    mask = sdpa.operands[3] if len(sdpa.operands) > 3 else None
    if mask is not None:
        mt = g.types[mask.name] if isinstance(mask, ValueRef) else g.p.params[mask.name]
        if mt.rank == 4 and not dims_equal(mt.shape[1], 1):
            # nn.MultiheadAttention repeats a key padding mask for every head; heads may be removed later,
            # so find the mask before the repetition
            mask = _head_free_mask(g, mask, sizes)
            if mask is None:
                return None
    projs = [_find_projection(g, o, sizes) for o in sdpa.operands[:3]]
    if any(p is None for p in projs):
        return None
    q, k, v = projs
    if q.width != k.width or not (q.heads == k.heads == v.heads):
        return None
    B, H, L, Dv = _concrete(sdpa.type.shape, sizes)
    # output side: sdpa -> layout ops -> linear (out projection) -> layout ops -> [B, L, E]
    o_ids = torch.arange(B * L * H * Dv).reshape(B, L, H, Dv).transpose(1, 2)
    cur, node = o_ids, sdpa
    while True:
        nxt = g.only_user(node.name)
        if nxt is None:
            return None
        if nxt.op == "linear" and nxt.operands[0] == ValueRef(node.name):
            out_lin = nxt
            break
        if nxt.op not in _LAYOUT or nxt.operands[0] != ValueRef(node.name):
            return None
        cur, node = _replay(nxt, cur, sizes), nxt
    rows = cur.reshape(-1, H * Dv)
    if cur.shape[-1] != H * Dv or not torch.equal(rows - rows[:, :1], torch.arange(H * Dv).expand_as(rows)):
        return None
    token = rows[:, 0] // (H * Dv)
    E = int(out_lin.type.shape[-1])
    y = torch.arange(B * L * E).reshape(B * L, E)[token].reshape(list(cur.shape[:-1]) + [E])
    want = torch.arange(B * L * E).reshape(B, L, E)
    end = out_lin

    def done(t: torch.Tensor) -> bool | None:
        if t.shape == want.shape and torch.equal(t, want):
            return False
        if t.dim() == 3 and t.shape == want.transpose(0, 1).shape and torch.equal(t, want.transpose(0, 1)):
            return True  # sequence-first result
        return None

    # walk the whole layout chain after the projection; prefer a token-major point over a sequence-first one
    found: list[tuple[Node, bool]] = []
    while True:
        flag = done(y)
        if flag is not None:
            found.append((end, flag))
        nxt = g.only_user(end.name)
        if nxt is None or nxt.op not in _LAYOUT:
            break
        y, end = _replay(nxt, y, sizes), nxt
    if not found:
        return None
    end, out_seq_first = min(found, key=lambda f: f[1])
    extra: list[Node] = []
    qf, kf, vf = _project(g, q, "q", extra), _project(g, k, "k", extra), _project(g, v, "v", extra)
    attrs = {
        "qk_dims": [q.width] * q.heads,
        "v_dims": [v.width] * v.heads,
        "head_group": list(range(q.heads)),
        "causal": bool(sdpa.attrs.get("causal", False)),
        "scale": float(sdpa.attrs["scale"]) if sdpa.attrs.get("scale") is not None else 1.0 / q.width**0.5,
    }
    heads_name = _fresh(g, f"{sdpa.name}_heads")
    qt = g.types[qf.name]
    ht = TensorType(qt.dtype, tuple(qt.shape[:-1]) + (H * Dv,))
    extra.append(Node(heads_name, "head_attention", [qf, kf, vf] + ([mask] if mask is not None else []), attrs, ht,
                      sdpa.loc, sdpa.origin))
    wo, bo = out_lin.operands[1], out_lin.operands[2] if len(out_lin.operands) > 2 else None
    proj_ops = [ValueRef(heads_name), wo] + ([bo] if bo is not None else [])
    if not out_seq_first:
        return end.name, Node(end.name, "linear", proj_ops, {}, end.type, end.loc, out_lin.origin), extra
    tm_name = _fresh(g, f"{out_lin.name}_batch_first")
    et = end.type
    extra.append(Node(tm_name, "linear", proj_ops, {}, TensorType(et.dtype, (et.shape[1], et.shape[0], et.shape[2])),
                      end.loc, out_lin.origin))
    return end.name, Node(end.name, "permute", [ValueRef(tm_name)], {"dims": [1, 0, 2]}, et, end.loc, out_lin.origin), extra


# ---- attention written with bmm + softmax (nn.MultiheadAttention with need_weights=True) ---------------
def _live_users(p: Program) -> dict[str, list[Node]]:
    live = set(p.outputs)
    for n in reversed(p.nodes):
        if n.name in live:
            live.update(r.name for r in n.value_operands())
    users: dict[str, list[Node]] = {}
    for n in p.nodes:
        if n.name in live:
            for r in n.value_operands():
                users.setdefault(r.name, []).append(n)
    return users


def _raise_math_attention(p: Program) -> Program:
    """bmm(softmax(bmm(q * scale, k^T), -1), v) over [B*H, L, D] ==> scaled_dot_product_attention over
    [B, H, L, D] (reshapes around it). The same batched computation, so exact whatever the split; the
    layout route then turns it into explicit heads when the split is the real one."""
    import sympy

    from ..ir.types import normalize_dim

    g = _Graph(p)
    users = _live_users(p)
    insert: dict[str, list[Node]] = {}
    for out in p.nodes:
        if out.op != "bmm":
            continue
        sm = g.producer(out.operands[0])
        if not _is(sm, "softmax") or sm.attrs["dim"] % 3 != 2 or len(users.get(sm.name, [])) != 1:
            continue
        sc = g.producer(sm.operands[0])
        if not _is(sc, "bmm") or len(users.get(sc.name, [])) != 1:
            continue
        q, scale = sc.operands[0], 1.0
        mq = g.producer(q)
        if _is(mq, "mul") and isinstance(mq.operands[1], (int, float)) and len(users.get(mq.name, [])) == 1:
            q, scale = mq.operands[0], float(mq.operands[1])
        kt = g.producer(sc.operands[1])
        if not _is(kt, "permute") or kt.attrs["dims"] != [0, 2, 1] or len(users.get(kt.name, [])) != 1:
            continue
        k, v = kt.operands[0], out.operands[1]
        if not all(isinstance(o, ValueRef) for o in (q, k, v)):
            continue
        qt, kt_, vt = g.types[q.name], g.types[k.name], g.types[v.name]
        # heads: from the width the output is flattened to before its projection
        nxt, width = out, None
        while True:
            us = users.get(nxt.name, [])
            if len(us) != 1:
                break
            nxt = us[0]
            if nxt.op == "linear":
                width = g.types[nxt.operands[0].name].shape[-1]
                break
            if nxt.op not in _LAYOUT:
                break
        dv = vt.shape[-1]
        if width is None or not isinstance(width, int) or not isinstance(dv, int) or width % dv:
            continue
        heads = width // dv
        bh = qt.shape[0]
        batch = normalize_dim(sympy.sympify(bh) / heads)
        if not (isinstance(batch, int) or batch.is_integer) or (isinstance(batch, int) and batch * heads != bh):
            continue
        extra: list[Node] = []

        def split(o: ValueRef, t: TensorType, tag: str) -> ValueRef:
            name = _fresh(g, f"{out.name}_{tag}4")
            t4 = TensorType(t.dtype, (batch, heads, t.shape[1], t.shape[2]))
            extra.append(Node(name, "reshape", [o], {"shape": list(t4.shape)}, t4, out.loc, out.origin))
            g.types[name] = t4
            return ValueRef(name)

        q4, k4, v4 = split(q, qt, "q"), split(k, kt_, "k"), split(v, vt, "v")
        att = _fresh(g, f"{out.name}_sdpa")
        at = TensorType(out.type.dtype, (batch, heads, qt.shape[1], dv))
        extra.append(Node(att, "scaled_dot_product_attention", [q4, k4, v4], {"causal": False, "scale": scale},
                          at, out.loc, out.origin))
        g.types[att] = at
        insert[out.name] = extra + [
            Node(out.name, "reshape", [ValueRef(att)], {"shape": list(out.type.shape)}, out.type, out.loc, out.origin)
        ]
    if insert:
        nodes: list[Node] = []
        for n in p.nodes:
            nodes.extend(insert.get(n.name, [n]))
        p.nodes = nodes
    return p
