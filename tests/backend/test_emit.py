"""Emitted modules: readable keys and code, .pt2 save/load, torch.compile, device and dtype moves."""
import re

import pytest
import torch

from sr_ir.backend import emit
from sr_ir.cli.emit import export_module
from sr_ir.frontend import lower
from sr_ir.models.convnext import convnext_tiny
from sr_ir.models.lenet import lenet300_100
from sr_ir.comparison import compare


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    model = convnext_tiny(num_classes=10, layer_scale_init=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    prog = lower(model, (x,))
    return model, prog, emit(prog), x


def test_state_dict_keys_are_the_original_names(convnext):
    model, prog, module, _ = convnext
    assert set(module.state_dict()) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(module.state_dict()[k], v), k


def test_generated_code_is_readable(convnext):
    _, prog, module, _ = convnext
    src = module.sr_ir_source
    assert src == emit(prog).sr_ir_source  # deterministic
    forward = src[src.index("def forward"):]
    # One line per node, plain torch calls, no exec tricks: a conv is an nn.Conv2d child called by its
    # original name, or (a parameter it does not own alone) F.conv2d.
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    calls = re.findall(r"^        \w+ = (?:F\.conv2d\(|self\.[\w.]+\(|getattr\()", forward, re.M)
    assert len(re.findall(r"^        \w+ = F\.conv2d\(", forward, re.M)) + len(convs) == sum(n.op == "conv2d" for n in prog.nodes)
    assert convs and len(calls) >= sum(n.op == "conv2d" for n in prog.nodes)
    assert "P.layer_norm_channels" in forward and "class P:" in src
    compile(src, "<check>", "exec")


def test_pt2_save_load_same_outputs(convnext, tmp_path):
    model, prog, module, x = convnext
    path = tmp_path / "convnext_tiny.pt2"
    export_module(module, prog, str(path))
    loaded = torch.export.load(str(path)).module()
    assert compare(model, loaded, (x,)).max_rel <= 1e-6
    x3 = torch.randn(3, 3, 32, 32)  # the batch dim stayed dynamic
    assert compare(model, loaded, (x3,)).max_rel <= 1e-6


def test_torch_compile_same_outputs(convnext):
    model, _, module, x = convnext
    compiled = torch.compile(module)
    c = compare(model, compiled, (x,))
    assert c.max_rel <= 1e-5, c


def test_device_and_dtype_agnostic():
    model = lenet300_100().eval()
    module = emit(lower(model, (torch.randn(2, 784),)))
    assert "cuda" not in module.sr_ir_source and "cpu" not in module.sr_ir_source
    module64 = module.to(torch.float64)
    x = torch.randn(3, 784, dtype=torch.float64)
    assert compare(model.double(), module64, (x,)).max_rel <= 1e-12
    meta = module.to("meta")  # moving devices moves every tensor
    assert all(p.device.type == "meta" for p in meta.state_dict().values())


def test_standalone_source_loads_elsewhere(tmp_path):
    from safetensors.torch import load_file

    from sr_ir.cli.main import main

    out = tmp_path / "lenet.py"
    assert main(["emit", "sr_ir.models.lenet:lenet300_100", "--python", str(out)]) == 0
    ns: dict = {}
    exec(compile(out.read_text(), str(out), "exec"), ns)
    m = ns["LeNet300100"]()
    m.load_state_dict(load_file(str(out.with_suffix(".safetensors"))))
    ref = lenet300_100().eval()
    x = torch.randn(4, 784)
    assert compare(ref, m, (x,)).max_abs == 0.0


def test_an_emitted_module_lowers_back_to_its_program_with_current_weights():
    prog = lower(lenet300_100(), (torch.randn(4, 784),))
    module = emit(prog)
    with torch.no_grad():  # fine-tuning changes weights, never structure
        module.fc2.weight.mul_(0.5)
    back = lower(module, (torch.randn(3, 784),))
    assert back.to_text() == prog.to_text()
    assert torch.equal(back.weights["fc2.weight"], module.fc2.weight.detach())
    assert not torch.equal(back.weights["fc2.weight"], prog.weights["fc2.weight"])
    # converted since emission: the program no longer describes it, so it goes through torch.export
    again = lower(module.double(), (torch.randn(3, 784, dtype=torch.float64),))
    assert again.inputs[0][1].dtype == "f64"


def test_non_finite_scalar_operands_emit_as_values():
    """`mul(%x, inf)` is a program (10,000-mutant IR fuzz of 2026-12-02 found it emitted as the name
    `inf`, a NameError in the generated module)."""
    import math

    import sr_ir as _sr

    p = _sr.parse("graph g(%x: f32[N, 4]) -> (f32[N, 4], f32[N, 4], f32[N, 4]) {\n"
                  "  %s = mul(%x, inf) : f32[N, 4]\n  %t = add(%x, -inf) : f32[N, 4]\n"
                  "  %u = add(%x, nan) : f32[N, 4]\n  return %s, %t, %u\n}\n")
    s, t, u = _sr.emit(p)(torch.ones(2, 4))
    assert bool((s == math.inf).all()) and bool((t == -math.inf).all()) and bool(u.isnan().all())
