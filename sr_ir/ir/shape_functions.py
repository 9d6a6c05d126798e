"""Named shape functions for ops whose result shape is not a fixed pattern (`-> shape NAME`).

Each takes the operand types (None for an absent optional operand, a float/int for a scalar),
the attributes with defaults filled in, and returns the result TensorType or raises ShapeError.
"""
from __future__ import annotations

from typing import Any, Callable

import sympy

from .types import Dim, TensorType, dims_equal, normalize_dim


class ShapeError(Exception):
    pass


ShapeFn = Callable[[list[Any], dict[str, Any]], TensorType]
SHAPE_FUNCTIONS: dict[str, ShapeFn] = {}


def shape_function(fn: ShapeFn) -> ShapeFn:
    SHAPE_FUNCTIONS[fn.__name__] = fn
    return fn


def _axis(dim: int, rank: int) -> int:
    if not -rank <= dim < max(rank, 1):
        raise ShapeError(f"axis {dim} out of range for rank {rank}")
    return dim % rank if rank else 0


def _broadcast_shapes(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...]:
    out: list[Dim] = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == 1:
            out.append(y)
        elif y == 1 or dims_equal(x, y):
            out.append(x)
        else:
            raise ShapeError(f"shapes {list(a)} and {list(b)} do not broadcast")
    return tuple(reversed(out))


@shape_function
def broadcast(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    tensors = [o for o in operands if isinstance(o, TensorType)]
    if not tensors:
        raise ShapeError("needs at least one tensor operand")
    shape: tuple[Dim, ...] = ()
    for t in tensors:
        shape = _broadcast_shapes(shape, t.shape)
    return TensorType(tensors[0].dtype, shape)


@shape_function
def matmul(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    a, b = operands
    if a.rank < 1 or b.rank < 1:
        raise ShapeError("matmul needs operands of rank >= 1")
    if a.rank == 1 and b.rank == 1:
        if not dims_equal(a.shape[0], b.shape[0]):
            raise ShapeError("inner dims differ")
        return TensorType(a.dtype, ())
    ash = a.shape if a.rank > 1 else (1,) + a.shape
    bsh = b.shape if b.rank > 1 else b.shape + (1,)
    if not dims_equal(ash[-1], bsh[-2]):
        raise ShapeError(f"inner dims differ: {ash[-1]} and {bsh[-2]}")
    batch = _broadcast_shapes(ash[:-2], bsh[:-2])
    shape = batch + (ash[-2],) * (a.rank > 1) + (bsh[-1],) * (b.rank > 1)
    return TensorType(a.dtype, shape)


@shape_function
def layer_norm(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    x, w, b = operands
    ns = list(attrs["normalized_shape"])
    if len(ns) > x.rank or not all(dims_equal(d, n) for d, n in zip(x.shape[-len(ns):], ns)):
        raise ShapeError(f"normalized_shape {ns} does not match the trailing dims of {x}")
    for p in (w, b):
        if p is not None and not (p.rank == len(ns) and all(dims_equal(d, n) for d, n in zip(p.shape, ns))):
            raise ShapeError(f"affine parameter {p} does not match normalized_shape {ns}")
    return x


@shape_function
def permute(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    (x,) = operands
    dims = [_axis(d, x.rank) for d in attrs["dims"]]
    if sorted(dims) != list(range(x.rank)):
        raise ShapeError(f"dims {attrs['dims']} is not a permutation of {x.rank} axes")
    return TensorType(x.dtype, tuple(x.shape[d] for d in dims))


@shape_function
def reshape(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    (x,) = operands
    shape = [normalize_dim(d) for d in attrs["shape"]]
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise ShapeError("reshape takes explicit dims (no -1)")
    if not dims_equal(TensorType(x.dtype, tuple(shape)).numel(), x.numel()):
        raise ShapeError(f"cannot reshape {x} to {shape}: element counts differ")
    return TensorType(x.dtype, tuple(shape))


@shape_function
def concat(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    if not operands:
        raise ShapeError("concat needs operands")
    first = operands[0]
    d = _axis(attrs["dim"], first.rank)
    total: Dim = 0
    for t in operands:
        if t.rank != first.rank or any(
            i != d and not dims_equal(a, b) for i, (a, b) in enumerate(zip(t.shape, first.shape))
        ):
            raise ShapeError(f"cannot concatenate {t} with {first} along axis {d}")
        total = normalize_dim(total + t.shape[d])
    return TensorType(first.dtype, first.shape[:d] + (total,) + first.shape[d + 1 :])


@shape_function
def select(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    (x,) = operands
    d = _axis(attrs["dim"], x.rank)
    size = x.shape[d]
    i = attrs["index"]
    if isinstance(size, int) and not -size <= i < size:
        raise ShapeError(f"index {i} out of range for size {size}")
    if not isinstance(size, int) and i not in (0, -1):  # a symbolic size is only known to be >= 1
        raise ShapeError(f"index {i} may be out of range for size {size} (only 0 and -1 always are not)")
    return TensorType(x.dtype, x.shape[:d] + x.shape[d + 1 :])


@shape_function
def slice(operands: list[Any], attrs: dict[str, Any]) -> TensorType:  # noqa: A001 - the op's name
    (x,) = operands
    d = _axis(attrs["dim"], x.rank)
    size, start, end, step = x.shape[d], attrs["start"], attrs["end"], attrs.get("step", 1)
    if step < 1:
        raise ShapeError("slice step must be positive")
    if not isinstance(size, int):
        raise ShapeError("slice of a symbolic dim is not supported")
    n = len(range(size)[start:end:step])
    return TensorType(x.dtype, x.shape[:d] + (n,) + x.shape[d + 1 :])


@shape_function
def index_select(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    x, index = operands
    if index.dtype not in ("i64", "i32"):
        raise ShapeError("index must be an integer tensor")
    d = _axis(attrs["dim"], x.rank)
    return TensorType(x.dtype, x.shape[:d] + (index.shape[0],) + x.shape[d + 1 :])


def _pool_dim(size: Dim, k: int, s: int, p: int, dil: int, ceil: bool) -> Dim:
    span = size + 2 * p - dil * (k - 1) - 1
    if isinstance(span, int):
        n = (-(-span // s) if ceil else span // s) + 1
        if ceil and (n - 1) * s >= size + p:
            n -= 1
        return n
    if ceil:
        raise ShapeError("ceil_mode pooling over a symbolic dim is not supported")
    return normalize_dim(sympy.floor(sympy.sympify(span) / s) + 1)


@shape_function
def pool(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    (x,) = operands
    nd = x.rank - 2
    k = list(attrs["kernel_size"])
    k = k * nd if len(k) == 1 else k
    s = list(attrs.get("stride") or k)
    s = s * nd if len(s) == 1 else s
    p = list(attrs.get("padding", [0]))
    p = p * nd if len(p) == 1 else p
    dil = list(attrs.get("dilation", [1]))
    dil = dil * nd if len(dil) == 1 else dil
    if not (len(k) == len(s) == len(p) == len(dil) == nd):
        raise ShapeError("pooling parameters do not match the spatial rank")
    spatial = tuple(
        _pool_dim(x.shape[2 + i], k[i], s[i], p[i], dil[i], bool(attrs.get("ceil_mode", False))) for i in range(nd)
    )
    return TensorType(x.dtype, x.shape[:2] + spatial)


@shape_function
def reduce(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    (x,) = operands
    axes = [_axis(d, x.rank) for d in attrs["dims"]]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"dims {attrs['dims']} name an axis twice")
    dims = set(axes)
    keep = attrs.get("keepdim", False)
    shape = tuple((1 if i in dims else d) for i, d in enumerate(x.shape) if keep or i not in dims)
    return TensorType(x.dtype, shape)


@shape_function
def expand(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    (x,) = operands
    shape = [normalize_dim(d) for d in attrs["shape"]]
    if len(shape) < x.rank:
        raise ShapeError(f"cannot expand {x} to fewer dims {shape}")
    lead = len(shape) - x.rank
    out: list[Dim] = list(shape[:lead])
    for d, s in zip(x.shape, shape[lead:]):
        if isinstance(s, int) and s == -1:
            out.append(d)
        elif d == 1 or dims_equal(d, s):
            out.append(s)
        else:
            raise ShapeError(f"cannot expand {x} to {shape}")
    return TensorType(x.dtype, tuple(out))


@shape_function
def cast(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    (x,) = operands
    from .types import DTYPES

    if attrs["dtype"] not in DTYPES:
        raise ShapeError(f"unknown dtype {attrs['dtype']!r}")
    return TensorType(attrs["dtype"], x.shape)


@shape_function
def compare(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    """Elementwise comparison: the broadcast shape, dtype bool."""
    return TensorType("bool", broadcast(operands, attrs).shape)


@shape_function
def take_along(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    """torch.gather: the index's shape, the source's dtype."""
    x, index = operands
    if index.rank != x.rank:
        raise ShapeError(f"index {index} must have the rank of {x}")
    _axis(attrs["dim"], x.rank)
    return TensorType(x.dtype, index.shape)


@shape_function
def cumsum(operands: list[Any], attrs: dict[str, Any]) -> TensorType:
    """torch.cumsum: integer and bool inputs accumulate in int64, as PyTorch does."""
    (x,) = operands
    _axis(attrs["dim"], x.rank)
    return TensorType("i64" if x.dtype in ("bool", "i8", "i16", "i32", "i64", "u8") else x.dtype, x.shape)
