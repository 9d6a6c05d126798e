"""sr_ir.frontend.raising: ATen chains raised into structured ops by certified `raise.*` rules, and
the two clean-ups that follow (parameter-only nodes become parameters, identical nodes merge)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sr_ir
from sr_ir.lang.loader import default_rules, load_rules
from sr_ir.frontend.raising import fold_parameter_nodes, merge_duplicates, raise_program
from sr_ir.resources import data_dir
from sr_ir.rewrite.rulebook import RuleBook

CHAIN = ["pow", "mean", "add", "rsqrt", "mul", "mul", "linear"]


class RMSNormMLP(nn.Module):
    """RMSNorm written out as a model library writes it (Llama), then a linear layer."""

    def __init__(self, n: int = 8, weight_last: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(n) + 0.5)
        self.eps = 1e-6
        self.weight_last = weight_last
        self.fc = nn.Linear(n, 3)

    def forward(self, x):
        r = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.fc(r * self.weight if self.weight_last else self.weight * r)


@pytest.fixture(scope="module")
def rs():
    return default_rules()


def _x():
    return torch.randn(2, 5, 8)


def ops(p) -> list[str]:
    return [n.op for n in p.nodes]


def test_rms_norm_chain_becomes_one_node(rs):
    m = RMSNormMLP()
    book = RuleBook(rs, stage="raise")
    p = sr_ir.lower(m, (_x(),), rules=rs, raise_book=book)
    assert ops(p) == ["rms_norm", "linear"]
    (norm,) = [n for n in p.nodes if n.op == "rms_norm"]
    assert norm.attrs["eps"] == 1e-6
    assert [getattr(o, "name", o) for o in norm.operands] == ["x", "weight"]
    assert book.used == {"raise.rms_norm": 1}
    assert not book.refused
    # the raised program computes what the module computes
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(sr_ir.emit(p, rs)(x), m(x), rtol=1e-5, atol=1e-6)


def test_the_weight_on_the_right_is_its_own_rule(rs):
    book = RuleBook(rs, stage="raise")
    p = sr_ir.lower(RMSNormMLP(weight_last=True), (_x(),), rules=rs, raise_book=book)
    assert ops(p) == ["rms_norm", "linear"]
    assert book.used == {"raise.rms_norm_weight_last": 1}


def test_a_raise_rule_without_a_certificate_is_not_applied(rs):
    m = RMSNormMLP()
    book = RuleBook(rs, stage="raise", certify=lambda r, s: "off")
    p = sr_ir.lower(m, (_x(),), rules=rs, raise_book=book)
    assert ops(p) == CHAIN
    assert book.used == {}
    assert book.refused == {"raise.rms_norm": "off"}
    x = _x()
    with torch.no_grad():  # the plain ops still lower, emit and run
        torch.testing.assert_close(sr_ir.emit(p, rs)(x), m(x), rtol=1e-5, atol=1e-6)


def test_raise_program_on_a_lowered_program(rs):
    m = RMSNormMLP()
    plain = sr_ir.lower(m, (_x(),), rules=rs, raise_book=RuleBook(rs, stage="raise", certify=lambda r, s: "off"))
    text = plain.to_text()
    off = RuleBook(rs, stage="raise", certify=lambda r, s: "off")
    assert ops(raise_program(plain, rs, off)) == CHAIN
    book = RuleBook(rs, stage="raise")
    raised = raise_program(plain, rs, book)
    assert ops(raised) == ["rms_norm", "linear"]
    assert book.used == {"raise.rms_norm": 1}
    assert plain.to_text() == text  # the input program is left as it was
    assert set(raised.params) == {"weight", "fc.weight", "fc.bias"}
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(sr_ir.emit(raised, rs)(x), sr_ir.emit(plain, rs)(x), rtol=1e-5, atol=1e-6)


def test_raise_program_without_raise_rules_returns_the_program(rs):
    plain = sr_ir.lower(RMSNormMLP(), (_x(),), rules=rs,
                        raise_book=RuleBook(rs, stage="raise", certify=lambda r, s: "off"))
    only_ops = load_rules([data_dir("rules") / "ops"])
    assert raise_program(plain, only_ops) is plain
    # the default book of raise_program runs the certified raise rules
    assert ops(raise_program(plain, rs)) == ["rms_norm", "linear"]


def test_the_minimize_stage_book_runs_no_raise_rule(rs):
    book = RuleBook(rs)  # stage="minimize"
    assert not book.kinds("substitution") or all(not cr.rule.name.startswith("raise.")
                                                 for cr in book.kinds("substitution"))
    assert all(cr.rule.name.startswith("raise.") for cr in RuleBook(rs, stage="raise").kinds("substitution"))


# ---- fold_parameter_nodes -------------------------------------------------------------------------

FOLD = """graph m(%x: f32[N, 4]) -> (f32[N, 4], f32[4], f32[N, 4]) {
  param @w: f32[4]
  buffer @t: f32[2, 2]
  %w2 = mul(@w, 2.0) : f32[4]
  %tf = reshape(@t, shape=[4]) : f32[4]
  %tf2 = neg(%tf) : f32[4]
  %mix = add(@w, %tf) : f32[4]
  %a = mul(%x, %w2) : f32[N, 4]
  %b = add(%a, %mix) : f32[N, 4]
  %out = neg(@w) : f32[4]
  %c = mul(%x, %tf2) : f32[N, 4]
  return %b, %out, %c
}
"""


def _fold_program():
    p = sr_ir.parse(FOLD)
    p.weights = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0]), "t": torch.tensor([[10.0, 20.0], [30.0, 40.0]])}
    return p


def test_parameter_only_nodes_become_parameters(rs):
    p = _fold_program()
    before = p.to_text()
    q = fold_parameter_nodes(p, rs)
    assert [n.name for n in q.nodes] == ["a", "b", "out", "c"]  # the network output %out stays a node
    assert [getattr(o, "name", o) for o in q.node_map()["a"].operands] == ["x", "w2"]
    assert torch.equal(q.weights["w2"], torch.tensor([2.0, 4.0, 6.0, 8.0]))
    assert torch.equal(q.weights["mix"], torch.tensor([11.0, 22.0, 33.0, 44.0]))  # chains fold through
    assert torch.equal(q.weights["tf2"], -torch.tensor([10.0, 20.0, 30.0, 40.0]))
    assert q.params["mix"].shape == (4,)
    # parameters nothing reads any more are gone; the input program is untouched
    assert "t" not in q.params and "tf" not in q.params
    assert p.to_text() == before and set(p.weights) == {"w", "t"}
    x = torch.randn(3, 4)
    with torch.no_grad():
        for a, b in zip(sr_ir.emit(q, rs)(x), sr_ir.emit(p, rs)(x)):
            torch.testing.assert_close(a, b)


def test_a_parameter_computed_from_buffers_only_stays_a_buffer(rs):
    q = fold_parameter_nodes(_fold_program(), rs)
    assert "tf2" in q.buffers  # from the buffer @t only (a RoPE table, say): not trainable
    assert "mix" not in q.buffers and "w2" not in q.buffers  # read the trainable @w
    assert "w" not in q.buffers
    assert q.buffers == {"tf2"} and set(q.weights) == set(q.params) == {"w", "w2", "mix", "tf2"}


def test_a_folded_parameter_gets_a_fresh_name(rs):
    p = sr_ir.parse("""graph m(%x: f32[N, 4]) -> (f32[N, 4]) {
  param @w: f32[4]
  %w = mul(@w, 2.0) : f32[4]
  %a = mul(%x, %w) : f32[N, 4]
  %b = add(%a, @w) : f32[N, 4]
  return %b
}
""")
    p.weights = {"w": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    q = fold_parameter_nodes(p, rs)
    (new,) = set(q.params) - {"w"}
    a, b = q.node_map()["a"], q.node_map()["b"]
    assert a.operands[1].name == new and b.operands[1].name == "w"
    assert torch.equal(q.weights["w"], torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(q.weights[new], torch.tensor([2.0, 4.0, 6.0, 8.0]))


def test_a_program_without_parameter_only_nodes_is_unchanged(rs):
    p = sr_ir.parse("""graph m(%x: f32[N, 4]) -> (f32[N, 4]) {
  param @w: f32[4]
  %a = mul(%x, @w) : f32[N, 4]
  return %a
}
""")
    p.weights = {"w": torch.ones(4)}
    assert fold_parameter_nodes(p, rs).to_text() == p.to_text()


# ---- merge_duplicates -----------------------------------------------------------------------------

MERGE = """graph m(%x: f32[N, 4]) -> (f32[N, 4], f32[N, 4]) {
  param @w: f32[4]
  %c = relu(%x) : f32[N, 4]
  %d = relu(%x) : f32[N, 4]
  %e = add(%c, %d) : f32[N, 4]
  %g1 = gelu(%x, approximate="tanh") : f32[N, 4]
  %g2 = gelu(%x) : f32[N, 4]
  %m1 = mul(%c, 2.0) : f32[N, 4]
  %m2 = mul(%d, 3.0) : f32[N, 4]
  %m3 = mul(%d, 2.0) : f32[N, 4]
  %p1 = mul(%x, @w) : f32[N, 4]
  %p2 = mul(%x, @w) : f32[N, 4]
  %s = add(%g1, %g2) : f32[N, 4]
  %t = add(%s, %m1) : f32[N, 4]
  %u = add(%t, %m2) : f32[N, 4]
  %v = add(%u, %m3) : f32[N, 4]
  %w2 = add(%v, %p1) : f32[N, 4]
  %z = add(%w2, %p2) : f32[N, 4]
  %o1 = relu(%x) : f32[N, 4]
  return %z, %o1
}
"""


def test_identical_nodes_merge_into_the_first(rs):
    p = sr_ir.parse(MERGE)
    p.weights = {"w": torch.rand(4)}
    ref = sr_ir.emit(p.copy(), rs)
    q = merge_duplicates(p)
    names = [n.name for n in q.nodes]
    # relu(%x) twice: one; mul(%d, 2.0) reads %c after the merge, so it is mul(%c, 2.0) again: one;
    # identical parameter reads: one
    assert "d" not in names and "m3" not in names and "p2" not in names
    nm = q.node_map()
    assert [o.name for o in nm["e"].operands] == ["c", "c"]
    assert [getattr(o, "name", o) for o in nm["m2"].operands] == ["c", 3.0]
    assert [o.name for o in nm["v"].operands] == ["u", "m1"]
    assert [o.name for o in nm["z"].operands] == ["w2", "p1"]
    # different attributes, different scalars: different nodes
    assert {"g1", "g2", "m1", "m2"} <= set(names)
    # a network output is never merged away
    assert "o1" in names and q.outputs == ["z", "o1"]
    x = torch.randn(3, 4)
    with torch.no_grad():
        for a, b in zip(sr_ir.emit(q, rs)(x), ref(x)):
            torch.testing.assert_close(a, b)
