"""ATen ops that need a little arithmetic to become IR nodes (the rest map by their rules/ declaration)."""
from __future__ import annotations

import re
from typing import Any

import torch

from ..errors import UnsupportedOpError
from .lower import Handler, _Lowering, source_line

# Identities in eval mode, or aliases that do not change values.
IDENTITY_OPS = {
    "aten.dropout.default",
    "aten.feature_dropout.default",
    "aten.alpha_dropout.default",
    "aten.contiguous.default",
    "aten.clone.default",
    "aten.detach.default",
    "aten.detach_.default",
    "aten.lift_fresh_copy.default",
    "aten.alias.default",
    "aten._assert_tensor_metadata.default",
}

HANDLERS: dict[str, Handler] = {}


def _derived(c: Any, how: str) -> tuple[str, str]:
    """The origin of a tensor derived from the known tensor `c` by `how`: the model's state_dict key
    `c` itself came from, and every step on the way (the report's name map)."""
    key, before = c.origin if c.origin is not None else (c.name, "")
    return key, f"{before}; {how}" if before else how


def handles(*keys: str):
    def deco(fn: Handler) -> Handler:
        for k in keys:
            HANDLERS[k] = fn
        return fn

    return deco


@handles(
    "aten.view.default",
    "aten.reshape.default",
    "aten._unsafe_view.default",
    "aten.flatten.using_ints",
    "aten.unflatten.int",
    "aten.unsqueeze.default",
    "aten.squeeze.dim",
    "aten.squeeze.dims",
    "aten.squeeze.default",
)
def _reshape(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    # The result shape export inferred (with our symbols) is the reshape target; the argument's -1
    # and symbolic sizes need no reinterpretation.
    x = lw.operand(v[0], n)
    t = lw.ttype(n.meta["val"], n)
    return lw.add_node("reshape", [x], {"shape": list(t.shape)}, n)


@handles("aten.transpose.int")
def _transpose(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    x, d0, d1 = v[0], v[1], v[2]
    rank = n.args[0].meta["val"].dim()
    dims = list(range(rank))
    d0, d1 = d0 % rank, d1 % rank
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return lw.add_node("permute", [lw.operand(x, n)], {"dims": dims}, n)


@handles("aten.t.default")
def _t(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    rank = n.args[0].meta["val"].dim()
    return lw.add_node("permute", [lw.operand(v[0], n)], {"dims": list(reversed(range(rank)))}, n)


def _scaled(lw: _Lowering, n: torch.fx.Node, y: Any, alpha: Any) -> Any:
    if alpha in (None, 1):
        return lw.operand(y, n)
    if isinstance(y, (int, float)):
        return y * alpha
    ref = lw.add_node("mul", [lw.operand(y, n), alpha], {}, n, n.meta["val"] if False else n.args[1].meta["val"])
    return ref


@handles("aten.add.Tensor", "aten.add.Scalar")
def _add(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    return lw.add_node("add", [lw.operand(v[0], n), _scaled(lw, n, v[1], v[2] if len(v) > 2 else 1)], {}, n)


@handles("aten.sub.Tensor", "aten.sub.Scalar")
def _sub(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    return lw.add_node("sub", [lw.operand(v[0], n), _scaled(lw, n, v[1], v[2] if len(v) > 2 else 1)], {}, n)


@handles("aten.rsub.Scalar", "aten.rsub.Tensor")
def _rsub(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    return lw.add_node("sub", [_scaled(lw, n, v[1], 1), lw.operand(v[0], n)] if v[2] in (None, 1) else [], {}, n)


@handles("aten.mul.Scalar")
def _mul_scalar(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    return lw.add_node("mul", [lw.operand(v[0], n), v[1]], {}, n)


@handles("aten.div.Scalar")
def _div_scalar(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    return lw.add_node("div", [lw.operand(v[0], n), v[1]], {}, n)


@handles("aten.batch_norm.default")
def _batch_norm(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    x, w, b, rm, rv, training, _momentum, eps, _cudnn = v
    if training:
        raise UnsupportedOpError(f"batch_norm in training mode at {source_line(n)} (lower the model in eval mode)")
    ops = [lw.operand(o, n) for o in (x, w, b, rm, rv)]
    return lw.add_node("batch_norm", ops, {"eps": float(eps)}, n)


@handles("aten._native_batch_norm_legit_no_training.default")
def _bn_no_training(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    x, w, b, rm, rv, _momentum, eps = v
    ops = [lw.operand(o, n) for o in (x, w, b, rm, rv)]
    val = n.meta["val"][0]
    return (lw.add_node("batch_norm", ops, {"eps": float(eps)}, n, val),)


@handles("getitem")
def _getitem(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    seq, i = v
    if isinstance(seq, (tuple, list)):
        return seq[i]
    raise UnsupportedOpError(f"indexing a non-tuple value at {source_line(n)}")


@handles("aten.max_pool2d_with_indices.default")
def _max_pool_with_indices(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    x, k, s, p, d, ceil = v
    users = [u for u in n.users if u.args[1] != 0]
    if users:
        raise UnsupportedOpError(f"max_pool2d indices are used at {source_line(users[0])}; only the values are supported")
    ref = lw.add_node(
        "max_pool2d", [lw.operand(x, n)],
        {"kernel_size": list(k), "stride": list(s or []), "padding": list(p), "dilation": list(d), "ceil_mode": bool(ceil)},
        n, n.meta["val"][0],
    )
    return (ref, None)


@handles("aten.mean.default")
def _mean_all(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    rank = n.args[0].meta["val"].dim()
    return lw.add_node("mean", [lw.operand(v[0], n)], {"dims": list(range(rank)), "keepdim": False}, n)


@handles("aten.scaled_dot_product_attention.default")
def _sdpa(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    q, k, val, mask, dropout_p, causal, scale, enable_gqa = v
    if dropout_p:
        raise UnsupportedOpError(
            f"scaled_dot_product_attention with dropout_p={dropout_p} at {source_line(n)}: "
            "dropout in eval mode changes the function; pass dropout_p=0.0 when not training"
        )
    if enable_gqa:
        raise UnsupportedOpError(f"scaled_dot_product_attention(enable_gqa=True) at {source_line(n)} is not supported yet")
    # torch broadcasts the mask against the scores: a mask built from the batch size stays one row
    ops = [lw.operand(o, n) for o in (q, k, val)] + [lw.operand(mask, n, broadcasts=True)]
    while ops and ops[-1] is None:
        ops.pop()
    attrs: dict[str, Any] = {"causal": bool(causal)}
    if scale is not None:
        attrs["scale"] = float(scale)
    return lw.add_node("scaled_dot_product_attention", ops, attrs, n)


@handles("aten.slice.Tensor")
def _slice(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    x, dim, start, end, step = v
    size = n.args[0].meta["val"].shape[dim]
    if start in (None, 0) and end is not None and (step or 1) == 1 and _covers(end, size):
        return lw.operand(x, n)  # x[:, ...] over a whole (possibly symbolic) dim: no-op
    if not isinstance(size, int):
        raise UnsupportedOpError(f"slicing a symbolic dim at {source_line(n)} is not supported")
    start, end, _ = slice(start, end).indices(size)
    dim = _last_as_negative(dim, n.args[0].meta["val"].dim())
    return lw.add_node("slice", [lw.operand(x, n)], {"dim": dim, "start": start, "end": end, "step": step or 1}, n)


def _last_as_negative(dim: int, rank: int) -> int:
    """The last axis as -1 (the channel rules speak of features on the last axis whatever the rank)."""
    return -1 if dim % rank == rank - 1 else dim % rank


def _covers(end: Any, size: Any) -> bool:
    """Whether a slice end reaches past the end of a dim (INT64_MAX, or the size itself)."""
    if isinstance(end, int) and end >= 2**62:
        return True
    try:
        return bool(end == size) or (isinstance(size, int) and isinstance(end, int) and end >= size)
    except Exception:
        return False


# ---- transformer-library idioms (casts, GPT-2's Conv1D addmm, split) ------------------------------
@handles("aten.to.dtype", "aten._to_copy.default", "aten.to.dtype_layout", "aten.to.device", "aten.type_as.default")
def _to(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    from ..ir.types import DTYPE_NAMES

    src, dst = n.args[0].meta["val"], n.meta["val"]
    if src.dtype == dst.dtype:
        return lw.operand(v[0], n)  # a device move or a same-dtype copy: no-op for the function
    if dst.dtype not in DTYPE_NAMES:
        raise UnsupportedOpError(f"cast to {dst.dtype} at {source_line(n)} is not supported")
    return lw.add_node("cast", [lw.operand(v[0], n)], {"dtype": DTYPE_NAMES[dst.dtype]}, n)


@handles("aten.addmm.default")
def _addmm(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    from .lower import _Const

    bias, x, w, beta, alpha = v[:5]
    if isinstance(w, _Const) and beta in (None, 1) and alpha in (None, 1) and w.tensor.dim() == 2:
        # x @ W + b with a known W [in, out] (GPT-2's Conv1D) is linear(x, W^T, b)
        wt = _Const(w.tensor.t().contiguous(), re.sub(r"weight$", "weight_t", w.name), w.is_buffer,
                    _derived(w, "transposed"))
        return lw.add_node("linear", [lw.operand(x, n), lw.param(wt), lw.operand(bias, n)], {}, n)
    raise UnsupportedOpError(f"addmm with a computed matrix operand at {source_line(n)} is not supported")


@handles("aten.split.Tensor", "aten.split_with_sizes.default", "aten.chunk.default")
def _split(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    x, sizes, dim = v[0], v[1], v[2] if len(v) > 2 and v[2] is not None else 0
    shape = n.args[0].meta["val"].shape
    dim = dim % len(shape)
    total = shape[dim]
    if not isinstance(total, int):
        raise UnsupportedOpError(f"split of a symbolic dim at {source_line(n)} is not supported")
    if str(n.target) == "aten.chunk.default":
        sizes = -(-total // sizes)  # torch.chunk: pieces of ceil(total / chunks), the last one shorter
    if isinstance(sizes, int):
        sizes = [min(sizes, total - s) for s in range(0, total, sizes)]
    from .lower import _Const

    if isinstance(x, _Const):  # a known tensor (a packed projection's weight): split it now
        parts = torch.split(x.tensor, list(sizes), dim)
        return tuple(_Const(t.contiguous(), f"{x.name}_{i}", x.is_buffer, _derived(x, f"part {i} along axis {dim}"))
                     for i, t in enumerate(parts))
    outs, start = [], 0
    dim = _last_as_negative(dim, len(shape))
    for i, size in enumerate(sizes):
        val = n.meta["val"][i]
        outs.append(
            lw.add_node("slice", [lw.operand(x, n)], {"dim": dim, "start": start, "end": start + size, "step": 1}, n, val)
        )
        start += size
    return tuple(outs)


@handles("aten.unbind.int")
def _unbind(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    x, dim = v[0], v[1] if len(v) > 1 and v[1] is not None else 0
    shape = n.args[0].meta["val"].shape
    dim = dim % len(shape)
    if not isinstance(shape[dim], int):
        raise UnsupportedOpError(f"unbind of a symbolic dim at {source_line(n)} is not supported")
    from .lower import _Const

    if isinstance(x, _Const):
        return tuple(_Const(t.contiguous(), f"{x.name}_{i}", x.is_buffer, _derived(x, f"index {i} along axis {dim}"))
                     for i, t in enumerate(torch.unbind(x.tensor, dim)))
    return tuple(lw.add_node("select", [lw.operand(x, n)], {"dim": dim, "index": i}, n, n.meta["val"][i])
                 for i in range(shape[dim]))


@handles("aten.zeros_like.default")
def _zeros_like(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    from ..ir.types import DTYPE_NAMES

    dt = n.meta["val"].dtype
    if dt not in DTYPE_NAMES:
        raise UnsupportedOpError(f"zeros_like with dtype {dt} at {source_line(n)} is not supported")
    return lw.add_node("zeros_like", [lw.operand(v[0], n)], {"dtype": DTYPE_NAMES[dt]}, n)


# ---- recurrent layers (rules/ops/recurrent.rules) ----------------------------------------------------
@handles("aten.lstm.input", "aten.gru.input")
def _recurrent(lw: _Lowering, n: torch.fx.Node, v: list[Any]) -> Any:
    """nn.LSTM / nn.GRU: one `lstm` / `gru` node per layer, batch-first (batch_first=False: a permute on
    each side), the weights as parameters under their own names with each gate's rows on an axis of
    their own ([G*m, n] held as [G, m, n], the declaration's layout). An initial state of zeros (what
    nn.LSTM makes when none is given) is the absent operand; the final hidden state is the last step of
    each layer's output. Returns (output, h_n[, c_n])."""
    from .lower import _BatchConst, _Const

    lstm = str(n.target) == "aten.lstm.input"
    op, gates = ("lstm", 4) if lstm else ("gru", 3)
    x, hx, params, has_biases, layers, _dropout, train, bidirectional, batch_first = v
    where = source_line(n)
    if bidirectional:
        raise UnsupportedOpError(f"{op} with bidirectional=True at {where} is not supported yet")
    if train:
        raise UnsupportedOpError(f"{op} in training mode at {where} (lower the model in eval mode)")
    per_layer = 4 if has_biases else 2
    if len(params) != per_layer * layers or not all(isinstance(p, _Const) for p in params):
        raise UnsupportedOpError(f"{op} at {where}: weights that are not the layer's own parameters, or "
                                 f"proj_size (not supported yet)")
    states = list(hx) if lstm else [hx]
    for s in states:
        zero = (isinstance(s, _Const) and not s.tensor.any()) or (
            isinstance(s, _BatchConst) and not any(t.any() for t in s.values.values()))
        if not zero:
            raise UnsupportedOpError(f"{op} at {where} with a given initial state is not supported yet "
                                     f"(only the zero state nn.{op.upper()} uses by default)")
    out_type = lw.ttype(n.meta["val"][0], n)
    shape = list(out_type.shape)
    if not batch_first:
        shape[0], shape[1] = shape[1], shape[0]
        x = _node(lw, "permute", [lw.operand(x, n)], {"dims": [1, 0, 2]}, out_type.dtype,
                  [shape[0], shape[1], lw.value_type(lw.operand(x, n)).shape[2]], n)
    y = lw.operand(x, n)
    outs = []
    for layer in range(layers):
        ws = params[layer * per_layer:(layer + 1) * per_layer]
        m = ws[1].tensor.shape[1]
        gated = [lw.param(_Const(w.tensor.reshape(gates, m, *w.tensor.shape[1:]).contiguous(), w.name, w.is_buffer,
                                 _derived(w, f"gate rows as [{gates}, {m}, ...]"))) for w in ws]
        y = _node(lw, op, [y] + gated, {}, out_type.dtype, shape, n)
        outs.append(y)
    output = y
    if not batch_first:
        output = _node(lw, "permute", [y], {"dims": [1, 0, 2]}, out_type.dtype, list(out_type.shape), n)
    used = {u.args[1] for u in n.users if u.users}
    if lstm and 2 in used:
        raise UnsupportedOpError(f"lstm at {where}: the final cell state c_n is used; only the output and h_n "
                                 f"are supported")
    h_n = None
    if 1 in used:  # the last step of every layer, stacked: [layers, b, m]
        t = shape[1]
        if not isinstance(t, int):
            raise UnsupportedOpError(f"{op} at {where}: h_n of a sequence of symbolic length is not supported")
        last = []
        for y_l in outs:
            step = _node(lw, "select", [y_l], {"dim": 1, "index": t - 1}, out_type.dtype, [shape[0], shape[2]], n)
            last.append(_node(lw, "reshape", [step], {"shape": [1, shape[0], shape[2]]}, out_type.dtype,
                              [1, shape[0], shape[2]], n))
        h_n = last[0] if layers == 1 else _node(lw, "concat", last, {"dim": 0}, out_type.dtype,
                                                   [layers, shape[0], shape[2]], n)
    return (output, h_n, None) if lstm else (output, h_n)


def _node(lw: _Lowering, op: str, operands: list[Any], attrs: dict[str, Any], dtype: str, shape: list[Any],
          n: torch.fx.Node) -> Any:
    """An IR node of a given type (for the nodes a handler makes that no fx node has the value of)."""
    from ..ir.program import Node, ValueRef
    from ..ir.types import TensorType

    name = lw.fresh(n.name)
    lw.nodes.append(Node(name, op, operands, attrs, TensorType(dtype, tuple(shape)), origin=source_line(n)))
    return ValueRef(name)
