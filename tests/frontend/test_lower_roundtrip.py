"""lower -> to_text -> parse -> emit reproduces the original outputs (float64 <= 1e-12, float32 <= 1e-5)."""
import pytest
import torch
import torch.nn.utils.prune
from torch import nn

import sr_ir
from sr_ir.backend import emit
from sr_ir.errors import UnsupportedOpError
from sr_ir.frontend import lower
from sr_ir.models.cnn import SmallCNN
from sr_ir.models.convnext import convnext_tiny
from sr_ir.models.lenet import lenet300_100
from sr_ir.comparison import compare

from .models import PreLNEncoder, UsesUnsupportedOp


def _cases():
    return {
        "lenet300_100": (lenet300_100, lambda: (torch.randn(5, 784),)),
        "convnext_tiny": (lambda: convnext_tiny(num_classes=10, layer_scale_init=0.5), lambda: (torch.randn(2, 3, 32, 32),)),
        "preln_encoder": (PreLNEncoder, lambda: (torch.randint(0, 50, (3, 12)),)),
        "small_cnn_bn_maxpool": (SmallCNN, lambda: (torch.randn(4, 1, 28, 28),)),
        "torch_transformer_encoder_layer": (
            lambda: nn.TransformerEncoderLayer(32, 4, 64, batch_first=True, norm_first=False, activation="gelu"),
            lambda: (torch.randn(3, 7, 32),),
        ),
    }


def _randomize_bn(model: nn.Module) -> None:
    # Fresh BatchNorm statistics are 0/1: make them nontrivial so the test means something.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def _round_trip(model: nn.Module, inputs):
    prog = lower(model, inputs)
    again = sr_ir.parse(prog.to_text(), "roundtrip.sr")
    assert again.to_text() == prog.to_text()
    again.weights = prog.weights
    return prog, emit(again)


@pytest.mark.parametrize("name", list(_cases()))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_round_trip_reproduces_outputs(name, dtype, tol):
    factory, make_inputs = _cases()[name]
    model = factory().to(dtype).eval()
    _randomize_bn(model)
    inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in make_inputs())
    prog, module = _round_trip(model, inputs)
    assert prog.param_count() == sum(p.numel() for p in model.parameters())
    # Same inputs, and a different batch size through the dynamic batch dim.
    for xs in (inputs, tuple(torch.cat([x, x[:1]]) for x in inputs)):
        c = compare(model, module, xs)
        assert c.max_rel <= tol, (name, c)


def test_dynamic_batch_symbol_is_n():
    prog = lower(lenet300_100(), (torch.randn(3, 784),))
    assert str(prog.inputs[0][1]) == "f32[N, 784]"


def test_channels_last_layer_norm_is_raised():
    prog = lower(convnext_tiny(num_classes=10), (torch.randn(2, 3, 32, 32),))
    ops = [n.op for n in prog.nodes]
    # The 4 LayerNorm2d (stem + 3 downsamplings) become channels-first norms; block norms stay layer_norm.
    assert ops.count("layer_norm_channels") == 4
    assert ops.count("layer_norm") == 18 + 1


def test_prune_masks_are_folded_into_named_weights():
    model = lenet300_100()
    torch.nn.utils.prune.random_unstructured(model.fc1, "weight", amount=0.9)
    prog = lower(model, (torch.randn(2, 784),))
    assert "fc1.weight" in prog.params and "fc1.weight_orig" not in prog.params
    assert torch.equal(prog.weights["fc1.weight"], model.fc1.weight)
    assert compare(model, emit(prog), (torch.randn(4, 784),)).max_abs == 0.0


def test_unsupported_op_names_op_and_source_line():
    with pytest.raises(UnsupportedOpError) as e:
        lower(UsesUnsupportedOp(), (torch.randn(2, 8),))
    msg = str(e.value)
    assert "aten.logcumsumexp" in msg
    assert "models.py:" in msg
    import inspect

    from . import models

    line = next(i for i, ln in enumerate(inspect.getsource(models).splitlines(), 1) if "torch.logcumsumexp" in ln)
    assert f"models.py:{line}" in msg
