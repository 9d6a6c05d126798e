"""Running one node through its op's template: a failure is one SrIrError naming the node and its line."""
import pytest
import torch

from sr_ir.backend.run import run_node
from sr_ir.errors import SrIrError
from sr_ir.ir.parser import parse
from sr_ir.lang.loader import default_rules

PROGRAM = """graph g(%x: f32[N, 4]) -> (f32[N, 2]) {
  param @idx: i64[2]
  %g = gather(%x, @idx, dim=1) : f32[N, 2]
  return %g
}
"""


def test_a_failing_template_names_the_node_and_its_location():
    node = parse(PROGRAM, "g.sr").nodes[0]
    decl = default_rules().ops["gather"]
    x = torch.randn(3, 4)
    assert torch.equal(run_node(decl, node, [x, torch.tensor([3, 0])]), x[:, [3, 0]])
    with pytest.raises(SrIrError, match=r"^g\.sr:3:3: %g = gather\(%x, @idx, dim=1\) : f32\[N, 2\]: fails when run: "):
        run_node(decl, node, [x, torch.tensor([0, 7])])
