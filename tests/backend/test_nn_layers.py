"""Emitted modules are ordinary torch modules: ops with a `module` clause become their torch.nn (or
sr_ir.nn) layer under the original name, state_dict keys stay the original parameter names, and the
module survives torch.save / torch.load in a fresh process and copy.deepcopy."""
import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import sr_ir
from sr_ir.backend import emit, emit_source
from sr_ir.lang.loader import load_rules
from sr_ir.nn import FixedCompensatedLayerNorm, FixedCompensatedRMSNorm, FrozenBatchNorm
from sr_ir.resources import data_dir


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 5 * 5, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    model = SmallCNN().double().eval()
    with torch.no_grad():  # a pruned filter: minimization removes it
        model.conv.weight[3] = 0
        model.conv.bias[3] = 0
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 3, 5, 5, dtype=torch.float64)
    result = sr_ir.minimize(model, (x,))
    return model, result, x


def test_minimized_cnn_has_conv2d_and_linear_children_with_the_original_names(cnn):
    model, result, x = cnn
    module = result.module
    assert isinstance(module.conv, nn.Conv2d) and isinstance(module.fc, nn.Linear)
    assert (module.conv.in_channels, module.conv.out_channels, module.conv.padding) == (3, 7, (1, 1))
    assert (module.fc.in_features, module.fc.out_features) == (7 * 25, 4)
    assert "Conv2d(3, 7, kernel_size=(3, 3)" in repr(module) and "Module()" not in repr(module)
    # state_dict keys: the program's parameters, i.e. the original model's names; the name map says so
    assert set(module.state_dict()) == set(result.program.params) <= set(model.state_dict())
    assert module.sr_ir_names == {n: n for n in result.program.params}
    assert (module(x) - model(x)).abs().max() <= 1e-12


def test_layer_emission_equals_the_functional_one_bit_for_bit(cnn):
    _, result, x = cnn
    functional = emit(result.program, layers=False)
    assert not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in functional.modules())
    assert "F.conv2d(" in functional.sr_ir_source and "F.conv2d(" not in result.module.sr_ir_source
    assert list(functional.state_dict()) == list(result.module.state_dict())
    with torch.no_grad():
        assert torch.equal(functional(x), result.module(x))


def test_torch_save_then_load_in_a_fresh_process(cnn, tmp_path):
    _, result, x = cnn
    module = result.module
    torch.save(module, tmp_path / "m.pt")
    torch.save(x, tmp_path / "x.pt")
    code = ("import torch; m = torch.load('m.pt', weights_only=False); x = torch.load('x.pt'); "
            "assert isinstance(m.conv, torch.nn.Conv2d) and m.sr_ir_names and not m.training; "
            "torch.save(m(x), 'y.pt'); print(type(m).__name__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == type(module).__name__
    with torch.no_grad():
        assert torch.equal(torch.load(tmp_path / "y.pt"), module(x))


def test_deepcopy_and_pickle_keep_the_class_and_the_outputs(cnn):
    _, result, x = cnn
    module = result.module
    twin = copy.deepcopy(module)
    assert type(twin) is type(module) and twin.fc.weight is not module.fc.weight
    with torch.no_grad():
        twin.fc.bias.add_(1.0)  # independent tensors
        assert torch.equal(module(x) + 1.0, twin(x))
    assert twin.sr_ir_program is not module.sr_ir_program


def test_export_and_lower_back(cnn):
    _, result, x = cnn
    module = result.module
    ep = torch.export.export(module, (x,))
    with torch.no_grad():
        assert torch.equal(ep.module()(x), module(x))
    back = sr_ir.lower(module, (x,))  # read from module.sr_ir_program with the module's weights
    assert [n.op for n in back.nodes] == [n.op for n in result.program.nodes]


def test_emission_leaves_the_random_state_alone(cnn):
    _, result, _ = cnn
    state = torch.random.get_rng_state()
    emit(result.program)
    assert torch.equal(state, torch.random.get_rng_state())


class Mixed(nn.Module):
    """BatchNorm that does not fold (after a relu), LayerNorm, Embedding, Conv1d, and one Linear applied
    twice (its weight is read by two nodes: the functional form)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.conv = nn.Conv1d(6, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(6)
        self.norm = nn.LayerNorm(6)
        self.twice = nn.Linear(6, 6)

    def forward(self, ids):
        h = self.conv(self.emb(ids).transpose(1, 2))
        h = self.bn(torch.relu(h)).transpose(1, 2)
        return self.twice(self.twice(self.norm(h)))


def test_each_declared_layer_and_the_functional_fallback():
    torch.manual_seed(1)
    model = Mixed().double().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    ids = torch.randint(0, 11, (2, 7))
    module = emit(sr_ir.lower(model, (ids,)))
    assert isinstance(module.emb, nn.Embedding) and isinstance(module.conv, nn.Conv1d) and module.conv.bias is None
    assert isinstance(module.bn, FrozenBatchNorm) and isinstance(module.norm, nn.LayerNorm)
    assert not isinstance(module.twice, nn.Linear) and module.sr_ir_source.count("F.linear(") == 2
    assert list(module.state_dict()) == [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    with torch.no_grad():
        assert (module(ids) - model(ids)).abs().max() <= 1e-12
        # the batch_norm op is the inference form: so is its layer, in training mode too
        assert torch.equal(module.train()(ids), module.eval()(ids))


COMPENSATED = """graph comp(%x: {dt}[N, 6]) -> ({dt}[N, 10]) {{
  param @fc.weight: {dt}[5, 6]
  param @fc.bias: {dt}[5]
  param @ln.weight: {dt}[5]
  param @ln.bias: {dt}[5]
  param @rms.weight: {dt}[5]
  %h = linear(%x, @fc.weight, @fc.bias) : {dt}[N, 5]
  %n = compensated_layer_norm(%h, @ln.weight, @ln.bias, n_total=7, s1=-0.6, s2=2.18, eps=0.001) : {dt}[N, 5]
  %r = compensated_rms_norm(%h, @rms.weight, n_total=7, s2=2.18, eps=0.002) : {dt}[N, 5]
  %y = concat(%n, %r, dim=1) : {dt}[N, 10]
  return %y
}}
"""


@pytest.mark.parametrize("dt", ["f64", "f32"])
def test_compensated_norms_are_the_packages_layers(dt):
    p = sr_ir.parse(COMPENSATED.format(dt=dt))
    g = torch.Generator().manual_seed(2)
    p.weights = {n: torch.randn(t.shape, generator=g, dtype=t.torch_dtype) for n, t in p.params.items()}
    module, functional = emit(p), emit(p, layers=False)
    assert isinstance(module.ln, FixedCompensatedLayerNorm) and isinstance(module.rms, FixedCompensatedRMSNorm)
    assert (module.ln.n_total, module.ln.s1, module.ln.s2, module.ln.eps) == (7, -0.6, 2.18, 0.001)
    assert list(module.state_dict()) == list(p.params)
    x = torch.randn(4, 6, generator=g, dtype=p.params["fc.weight"].torch_dtype)
    with torch.no_grad():
        assert torch.equal(module(x), functional(x))
    assert torch.equal(copy.deepcopy(module)(x), module(x))
    # source that imports torch only: the package's layers in their functional form, the same keys
    standalone = emit_source(p, standalone=True)
    assert "sr_ir" not in standalone and "self.fc = nn.Linear(" in standalone and "import sr_ir.nn as SN" in module.sr_ir_source
    namespace: dict = {}
    exec(compile(standalone, "<standalone>", "exec"), namespace)
    plain = namespace["Comp"]()
    plain.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(x), module(x))


def test_a_layer_under_a_path_that_is_no_identifier():
    p = sr_ir.parse("graph g(%x: f32[N, 3]) -> (f32[N, 2]) {\n  param @trunk.block1-0.weight: f32[2, 3]\n"
                    "  %y = linear(%x, @trunk.block1-0.weight) : f32[N, 2]\n  return %y\n}\n")
    p.weights = {"trunk.block1-0.weight": torch.arange(6.0).reshape(2, 3)}
    module = emit(p)
    layer = getattr(module.trunk, "block1-0")
    assert isinstance(layer, nn.Linear) and layer.bias is None
    assert "getattr(self.trunk, 'block1-0')(x)" in module.sr_ir_source
    assert torch.equal(module(torch.ones(1, 3)), torch.tensor([[3.0, 12.0]]))


def _rules_with(tmp_path: Path, old: str, new: str):
    """The bundled rules, copied, with one line of rules/ops/core.rules changed."""
    root = tmp_path / "rules"
    shutil.copytree(data_dir("rules"), root)
    core = root / "ops" / "core.rules"
    text = core.read_text()
    assert text.count(old) == 1
    core.write_text(text.replace(old, new))
    return load_rules([root])


LINEAR_MODULE = '  module "nn.Linear({n}, {m}, bias={has_bias}, dtype={dtype})" holds weight, bias\n'


def test_the_module_clause_decides_what_is_emitted(cnn, tmp_path):
    _, result, x = cnn
    without = _rules_with(tmp_path / "a", LINEAR_MODULE, "")
    src = emit_source(result.program, without)
    assert "self.fc = nn.Linear" not in src and "F.linear(" in src and "nn.Conv2d(" in src
    module = emit(result.program, without)
    assert not isinstance(module.fc, nn.Linear)
    with torch.no_grad():
        assert torch.equal(module(x), result.module(x))
    # another constructor text is what the emitted __init__ says
    other = _rules_with(tmp_path / "b", LINEAR_MODULE, LINEAR_MODULE.replace("dtype={dtype})", "dtype={dtype}, device=None)"))
    assert "self.fc = nn.Linear(175, 4, bias=True, dtype=torch.float64, device=None)" in emit_source(result.program, other)
    # a template that builds a layer of other state (no bias) falls back to the functional form
    nobias = _rules_with(tmp_path / "c", LINEAR_MODULE, LINEAR_MODULE.replace("bias={has_bias}", "bias=False"))
    assert "F.linear(" in emit_source(result.program, nobias)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_layers_run_on_the_gpu(cnn):
    _, result, x = cnn
    module = copy.deepcopy(result.module).cuda()
    with torch.no_grad():
        assert (module(x.cuda()).cpu() - result.module(x)).abs().max() <= 1e-12
