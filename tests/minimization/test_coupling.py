"""Named coupling functions (sr_ir/ops/coupling.py) and the engine's use of block/offset ties."""
from __future__ import annotations

import torch
from torch import nn

from sr_ir.frontend import lower
from sr_ir.ir.types import TensorType, symbol
from sr_ir.lang.loader import default_rules
from sr_ir.minimization import RuleBook, minimize_program
from sr_ir.ops.coupling import OUT, Tie, node_ties

N = symbol("N")


def T(*shape):
    return TensorType("f32", tuple(shape))


def _ties(op, types, attrs=None, variadic=None):
    return set(node_ties(default_rules().ops[op].couple, types, variadic or {}, attrs or {}))


def test_elementwise_ties_equal_axes_from_the_right_and_skips_broadcast_ones():
    ties = _ties("add", {"x": T(N, 8, 4, 4), "y": T(8, 1, 1), OUT: T(N, 8, 4, 4)})
    assert Tie(("y", 0), (OUT, 1)) in ties
    assert Tie(("x", 1), (OUT, 1)) in ties
    assert not any(t.a == ("y", 1) or t.a == ("y", 2) for t in ties)


def test_dense_depthwise_and_grouped_convs():
    dense = _ties("conv2d", {"x": T(N, 3, 8, 8), "weight": T(6, 3, 3, 3), "bias": T(6), OUT: T(N, 6, 6, 6)}, {"groups": 1})
    assert dense == {Tie(("x", 1), ("weight", 1)), Tie((OUT, 1), ("weight", 0)), Tie(("weight", 0), ("bias", 0))}
    dw = _ties("conv2d", {"x": T(N, 6, 8, 8), "weight": T(6, 1, 3, 3), "bias": T(6), OUT: T(N, 6, 6, 6)}, {"groups": 6})
    assert Tie(("x", 1), (OUT, 1)) in dw and Tie((OUT, 1), ("weight", 0)) in dw
    grouped = _ties("conv2d", {"x": T(N, 6, 8, 8), "weight": T(6, 3, 3, 3), "bias": T(6), OUT: T(N, 6, 6, 6)}, {"groups": 2})
    assert grouped == set()


def test_reshape_flatten_split_and_unsqueeze():
    flat = _ties("reshape", {"x": T(N, 4, 3, 3), OUT: T(N, 36)}, {"shape": [N, 36]})
    assert flat == {Tie(("x", 0), (OUT, 0)), Tie(("x", 1), (OUT, 1), "block", 9)}
    split = _ties("reshape", {"x": T(N, 12), OUT: T(N, 3, 4)}, {"shape": [N, 3, 4]})
    assert Tie((OUT, 1), ("x", 1), "block", 4) in split
    unsq = _ties("reshape", {"x": T(N, 5), OUT: T(N, 1, 5)}, {"shape": [N, 1, 5]})
    assert unsq == {Tie(("x", 0), (OUT, 0)), Tie(("x", 1), (OUT, 2))}


def test_concat_offsets_permute_reduce_gather():
    cat = _ties("concat", {"xs#0": T(N, 3), "xs#1": T(N, 5), OUT: T(N, 8)}, {"dim": 1}, {"xs": ["xs#0", "xs#1"]})
    assert Tie(("xs#1", 1), (OUT, 1), "offset", 3) in cat and Tie(("xs#0", 1), (OUT, 1), "offset", 0) in cat
    perm = _ties("permute", {"x": T(N, 8, 4, 5), OUT: T(N, 4, 5, 8)}, {"dims": [0, 2, 3, 1]})
    assert Tie(("x", 1), (OUT, 3)) in perm
    red = _ties("mean", {"x": T(N, 8, 4, 4), OUT: T(N, 8)}, {"dims": [-2, -1], "keepdim": False})
    assert red == {Tie(("x", 0), (OUT, 0)), Tie(("x", 1), (OUT, 1))}
    g = _ties("gather", {"x": T(N, 20), "index": TensorType("i64", (7,)), OUT: T(N, 7)}, {"dim": 1})
    assert Tie((OUT, 1), ("index", 0)) in g and not any(t.a == ("x", 1) for t in g)


class ConvFlat(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


def test_flatten_blocks_carry_constants_and_unused_columns_across_the_reshape():
    """Engine-level: every rule admitted explicitly, to exercise the block relation itself (the certified
    path through `channels.reshape.flatten` is tests/minimization/test_flatten_concat.py)."""
    torch.manual_seed(0)
    m = ConvFlat().double()
    with torch.no_grad():
        m.conv.weight[0] = 0
        m.conv.bias[0] = 0.7  # channel 0: constant 0.7 over its 25 flattened columns -> folded into fc.bias
        m.fc.weight[:, 25:50] = 0  # channel 1: its whole block unread -> dropped
        m.fc.weight[:, 50:60] = 0  # channel 2: part of its block unread -> stays
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    rs = default_rules()
    p = lower(m, (x,), rules=rs)
    q, report = minimize_program(p, rs, book=RuleBook(rs, certify=lambda rule, ruleset: None))
    assert q.params["conv.weight"].shape[0] == 2 and q.params["fc.weight"].shape == (3, 50)
    from sr_ir.backend import emit

    with torch.no_grad():
        y0, y1 = m(x), emit(q, rs)(x)
    assert float((y0 - y1).abs().max() / y0.abs().max()) < 1e-12
