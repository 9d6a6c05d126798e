"""Channel coupling: which axes of an op's operands and result must lose the same channels together.

An op declaration's `couple` clause is either explicit axis chains (`x.-1 = weight.1; out.-1 =
weight.0 = bias.0`) or a named coupling function (`elementwise(x, y)`, `conv_channels(...)`, ...).
Both become a list of `Tie`s between (slot, axis) pairs, where a slot is a tensor parameter name of
the op (`xs#2` for the third operand of a variadic parameter) or `out` for the result.

A tie is an index map between the two axes:
- `same`:   channel c of a is channel c of b;
- `block`:  channel c of a is the run b[c*arg : (c+1)*arg] (a flatten merged a with the axes after it);
- `offset`: channel c of a is channel c + arg of b (a concat put a at that offset).
Axes with no tie cannot lose channels through this op. Named functions are registered here, like
the shape functions in shape_functions.py; nothing else in the engine knows an op.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Callable, Sequence

from ..ir.types import TensorType, dims_equal

OUT = "out"


@dataclass(frozen=True)
class Tie:
    a: tuple[str, int]
    b: tuple[str, int]
    kind: str = "same"  # same | block | offset
    arg: int = 0


class CouplingError(Exception):
    pass


# A coupling function gets the slot types (name -> TensorType, scalar or None; `out` included),
# the names its clause passes (resolved to slot names; variadic ones expanded as `name#i`) and the
# node's attributes with defaults, and returns ties.
CouplingFn = Callable[[dict[str, Any], list[list[str]], dict[str, Any]], list[Tie]]
COUPLING_FUNCTIONS: dict[str, CouplingFn] = {}


def coupling_function(fn: CouplingFn) -> CouplingFn:
    COUPLING_FUNCTIONS[fn.__name__] = fn
    return fn


def _tensor(types: dict[str, Any], slot: str) -> TensorType | None:
    t = types.get(slot)
    return t if isinstance(t, TensorType) else None


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise CouplingError(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def node_ties(couple: Sequence[Any], types: dict[str, Any], variadic: dict[str, list[str]], attrs: dict[str, Any]) -> list[Tie]:
    """The ties of one node, from its declaration's `couple` clauses.

    `types` maps slot names (and `out`) to their types; `variadic` maps a variadic parameter name to
    its expanded slots. Clauses that name an absent optional operand contribute nothing.
    """
    ties: list[Tie] = []
    for clause in couple:
        if clause[0] == "axes":
            refs = []
            for name, axis in clause[1]:
                t = _tensor(types, name)
                if t is not None:
                    refs.append((name, _axis(axis, t.rank)))
            for a, b in zip(refs, refs[1:]):
                if dims_equal(types[a[0]].shape[a[1]], types[b[0]].shape[b[1]]):
                    ties.append(Tie(a, b))
        elif clause[0] == "fn":
            _, fname, args = clause
            fn = COUPLING_FUNCTIONS.get(fname)
            if fn is None:
                raise CouplingError(f"unknown coupling function {fname!r}")
            ties.extend(fn(types, [variadic.get(a, [a]) for a in args], attrs))
    return ties


@coupling_function
def elementwise(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    """Operands broadcast against each other: equal-sized axes, aligned from the right, are tied to the result."""
    out = types[OUT]
    ties = []
    for (slot,) in args:
        t = _tensor(types, slot)
        if t is None:
            continue
        for i in range(1, t.rank + 1):
            if dims_equal(t.shape[-i], out.shape[-i]):
                ties.append(Tie((slot, t.rank - i), (OUT, out.rank - i)))
    return ties


@coupling_function
def conv_channels(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    """Dense conv: input channels with the filters' axis 1, output channels with the filters' axis 0 and
    the bias. Depthwise (one filter per input channel): input, output, filter and bias channels are one.
    Other grouped convs mix channel blocks; they are not tied (their channels stay)."""
    (x,), (w,), (b,), _groups = args
    xt, wt, bt, out = _tensor(types, x), _tensor(types, w), _tensor(types, b), types[OUT]
    groups = attrs.get("groups", 1)
    outs = [Tie((OUT, 1), (w, 0))] + ([Tie((w, 0), (b, 0))] if bt is not None else [])
    if groups == 1:
        return [Tie((x, 1), (w, 1))] + outs
    if wt.shape[1] == 1 and dims_equal(xt.shape[1], groups) and dims_equal(out.shape[1], groups):
        return [Tie((x, 1), (OUT, 1))] + outs
    return []


@coupling_function
def norm_channels(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    """Every axis of x with the result; the normalised trailing axes also with weight and bias."""
    (x,), (w,), (b,), _ns = args
    xt = types[x]
    ties = [Tie((x, i), (OUT, i)) for i in range(xt.rank)]
    k = len(attrs.get("normalized_shape", []))
    for p in (w, b):
        pt = _tensor(types, p)
        if pt is not None:
            ties += [Tie((OUT, xt.rank - k + i), (p, i)) for i in range(k)]
    return ties


@coupling_function
def permute_axes(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    (x,), _dims = args
    rank = types[x].rank
    return [Tie((x, _axis(d, rank)), (OUT, i)) for i, d in enumerate(attrs["dims"])]


@coupling_function
def reduce_axes(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    (x,), _dims, _keep = args
    rank = types[x].rank
    reduced = {_axis(d, rank) for d in attrs["dims"]}
    keep = attrs.get("keepdim", False)
    ties, j = [], 0
    for i in range(rank):
        if i in reduced:
            j += 1 if keep else 0
            continue
        ties.append(Tie((x, i), (OUT, j)))
        j += 1
    return ties


@coupling_function
def concat_axes(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    xs, _dim = args
    out = types[OUT]
    d = _axis(attrs["dim"], out.rank)
    ties, offset = [], 0
    for slot in xs:
        t = types[slot]
        for i in range(t.rank):
            if i != d:
                ties.append(Tie((slot, i), (OUT, i)))
        if not isinstance(t.shape[d], int):
            return [x for x in ties if x.a[1] != d]
        ties.append(Tie((slot, d), (OUT, d), "offset", offset))
        offset += t.shape[d]
    return ties


@coupling_function
def gather_axes(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    """Axes other than `dim` pass through; the gathered axis follows the index table (dropping an
    output position drops its index entry)."""
    (x,), (index,), _dim = args
    rank = types[x].rank
    d = _axis(attrs["dim"], rank)
    ties = [Tie((x, i), (OUT, i)) for i in range(rank) if i != d]
    ties.append(Tie((OUT, d), (index, 0)))
    return ties


@coupling_function
def reshape_blocks(types: dict[str, Any], args: list[list[str]], attrs: dict[str, Any]) -> list[Tie]:
    """Walk input and output axes together. An axis kept as is is tied `same`; a run of input axes
    merged into one output axis ties its first axis to the output as blocks (flatten: channel c is
    columns [c*HW, (c+1)*HW)); a split ties the split's first output axis to the input the same way.
    Size-1 axes (unsqueeze/squeeze) are skipped."""
    ((x,), _shape) = args
    src = list(types[x].shape)
    dst = list(types[OUT].shape)
    ties: list[Tie] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        if src[i] == 1 and dst[j] != 1:
            i += 1
            continue
        if dst[j] == 1 and src[i] != 1:
            j += 1
            continue
        if dims_equal(src[i], dst[j]):
            ties.append(Tie((x, i), (OUT, j)))
            i, j = i + 1, j + 1
            continue
        if not all(isinstance(d, int) for d in (src[i], dst[j])):
            break  # symbolic sizes that do not line up: stop tying
        # grow the smaller side until the products meet
        i2, j2, ps, pd = i + 1, j + 1, src[i], dst[j]
        while ps != pd:
            if ps < pd and i2 < len(src) and isinstance(src[i2], int):
                ps, i2 = ps * src[i2], i2 + 1
            elif pd < ps and j2 < len(dst) and isinstance(dst[j2], int):
                pd, j2 = pd * dst[j2], j2 + 1
            else:
                return ties
        if j2 == j + 1:  # merge of src[i:i2] into dst[j]
            ties.append(Tie((x, i), (OUT, j), "block", prod(src[i + 1 : i2])))
        elif i2 == i + 1:  # split of src[i] into dst[j:j2]
            ties.append(Tie((OUT, j), (x, i), "block", prod(dst[j + 1 : j2])))
        i, j = i2, j2
    return ties


# ---- attributes that spell out channel counts ----------------------------------------------------
# When channels leave a tied axis, attributes that state that axis's length must follow. Keyed by the
# coupling function that ties the axis; each gets (attrs, old slot types, new slot types) and returns
# the attribute updates.
ResizeFn = Callable[[dict[str, Any], dict[str, Any], dict[str, Any], list[list[str]]], dict[str, Any]]
RESIZERS: dict[str, ResizeFn] = {}


def resizer(name: str):
    def deco(fn: ResizeFn) -> ResizeFn:
        RESIZERS[name] = fn
        return fn

    return deco


@resizer("conv_channels")
def _resize_conv(attrs: dict[str, Any], old: dict[str, Any], new: dict[str, Any], args: list[list[str]]) -> dict[str, Any]:
    (x,) = args[0]
    g = attrs.get("groups", 1)
    if g != 1 and dims_equal(old[x].shape[1], g):
        return {"groups": new[x].shape[1]}
    return {}


@resizer("reshape_blocks")
def _resize_reshape(attrs: dict[str, Any], old: dict[str, Any], new: dict[str, Any], args: list[list[str]]) -> dict[str, Any]:
    return {"shape": list(new[OUT].shape)} if list(old[OUT].shape) != list(new[OUT].shape) else {}


@resizer("norm_channels")
def _resize_norm(attrs: dict[str, Any], old: dict[str, Any], new: dict[str, Any], args: list[list[str]]) -> dict[str, Any]:
    (x,) = args[0]
    k = len(attrs.get("normalized_shape", []))
    if k and list(old[x].shape[-k:]) != list(new[x].shape[-k:]):
        return {"normalized_shape": [int(d) for d in new[x].shape[-k:]]}
    return {}
