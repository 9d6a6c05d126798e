"""Emission keeps torch module paths that are not Python identifiers (RegNet's `block1-0`, a space, a
keyword, a non-ASCII name) as state_dict keys, and names the model class clear of the module's own names."""
import torch

import sr_ir
from sr_ir.backend.torch_module import emit_source

NAMES = ["trunk.block1-0.weight", "stage 2.0.bias", "class.w", "\u00e9t\u00e9.\ufb01"]


def _program(graph: str = "net") -> "sr_ir.Program":
    decls = "".join(f"  param {sr_ir.ParamRef(n)}: f32[4]\n" for n in NAMES)
    body, prev = "", "%x"
    for i, n in enumerate(NAMES):
        body += f"  %a{i} = add({prev}, {sr_ir.ParamRef(n)}) : f32[N, 4]\n"
        prev = f"%a{i}"
    p = sr_ir.parse(f"graph {graph}(%x: f32[N, 4]) -> (f32[N, 4]) {{\n{decls}{body}  return {prev}\n}}\n")
    p.weights = {n: torch.full((4,), float(i + 1)) for i, n in enumerate(NAMES)}
    return p


def test_any_module_path_emits_and_runs_with_its_own_state_dict_key():
    module = sr_ir.emit(_program())
    assert list(module.state_dict()) == NAMES
    assert torch.equal(module(torch.zeros(2, 4)), torch.full((2, 4), 10.0))


def test_the_model_class_does_not_hide_torch_F_or_P():
    for graph, cls in [("f", "FModel"), ("p", "PModel"), ("none", "NoneModel"), ("_1net", "Model1net")]:
        assert f"class {cls}(nn.Module):" in emit_source(_program(graph))
    assert sr_ir.emit(_program("f"))(torch.zeros(1, 4)).shape == (1, 4)
