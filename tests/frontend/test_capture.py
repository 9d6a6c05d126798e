"""The fast capture (`lower(capture="trace")`, the default) gives torch.export's program.

A representative subset of the zoo and the bundled models is lowered both ways and compared by
`capture.fingerprint`: IR text, every node's source line, buffers, name map and the weights' bits, with
value names numbered by first appearance (export spends names on symbolic size arithmetic; the
subset below is compared with its names as well where they agree). The full comparison over every zoo
model is benchmarks/capture_equivalence.py (recorded in benchmarks/RESULTS.md). The rest tests each
reason the capture leaves a model to torch.export.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import sr_ir
from sr_ir.errors import SrIrError
from sr_ir.frontend.capture import TRACE_BATCH, capture, fingerprint
from sr_ir.frontend.lower import _graph_name, _lower_traced
from sr_ir.minimization.api import resolve_rules

from .models import PreLNEncoder, UsesUnsupportedOp


def _both(model: nn.Module, x: tuple, names: bool = True) -> tuple[sr_ir.Program, sr_ir.Program]:
    """The program by each capture; asserts they are the same (with the same value names if `names`)."""
    model = model.eval()
    a = sr_ir.lower(model, x, capture="export")
    b = sr_ir.lower(model, x, capture="trace")
    assert fingerprint(b, value_names=False) == fingerprint(a, value_names=False)
    if names:
        assert fingerprint(b) == fingerprint(a)
    return a, b


def _fast(model: nn.Module, x: tuple) -> bool:
    """Whether the capture itself lowered the model (rather than leaving it to torch.export)."""
    prog = _lower_traced(model.eval(), x, True, resolve_rules(None), _graph_name(type(model).__name__), None)
    return prog is not None


def _image(b: int, c: int = 3, size: int = 32) -> tuple[torch.Tensor]:
    return (torch.randn(b, c, size, size, generator=torch.Generator().manual_seed(b)),)


def _pruned_lenet() -> nn.Module:
    from torch.nn.utils import prune

    from sr_ir.models.lenet import lenet300_100

    torch.manual_seed(0)
    m = lenet300_100()
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            prune.random_unstructured(mod, "weight", 0.5)  # the hook stays: weight = weight_orig * weight_mask
    return m


def _subset() -> list:
    from sr_ir.models import transformers as tr
    from sr_ir.models.cnn import SmallCNN
    from sr_ir.models.convnext import convnext_small_test
    from sr_ir.models.lenet import example_inputs, lenet300_100

    cfg = tr.small_config("llama")
    return [
        pytest.param(lenet300_100, lambda: example_inputs(3), id="lenet"),
        pytest.param(_pruned_lenet, lambda: example_inputs(2), id="pruned-lenet-hooks"),
        pytest.param(SmallCNN, lambda: _image(2, 1, 28), id="small-cnn-batchnorm"),
        pytest.param(convnext_small_test, lambda: _image(2), id="convnext"),
        pytest.param(lambda: tr.build("llama"), lambda: (tr.example_ids(cfg, 2),), id="llama-gqa-rope"),
        pytest.param(PreLNEncoder, lambda: (torch.randint(0, 50, (2, 12)),), id="pre-ln-encoder"),
        pytest.param(lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 1,
                                                   enable_nested_tensor=False),
                     lambda: (torch.randn(2, 5, 16),), id="torch-transformer-encoder"),
    ]


@pytest.mark.parametrize("build,inputs", _subset())
def test_the_capture_lowers_the_program_torch_export_gives(build, inputs):
    model, x = build(), inputs()
    a, b = _both(model, x)
    assert _fast(model, x)  # the capture itself lowered it: no fallback hides a difference
    assert a.inputs[0][1].shape[0] == b.inputs[0][1].shape[0] == sr_ir.ir.types.symbol("N")


def test_source_lines_name_the_model_not_the_capture():
    model, x = PreLNEncoder(), (torch.randint(0, 50, (2, 12)),)
    _, b = _both(model, x)
    origins = {n.origin for n in b.nodes}
    assert all("capture.py" not in o for o in origins)
    assert any(o.startswith(__file__.replace("test_capture.py", "models.py")) for o in origins)


def test_an_unsupported_op_reports_the_same_error_either_way():
    errors = []
    for way in ("export", "trace"):
        with pytest.raises(SrIrError) as e:
            sr_ir.lower(UsesUnsupportedOp().eval(), (torch.randn(2, 8),), capture=way)
        errors.append(str(e.value))
    assert errors[0] == errors[1]
    assert "logcumsumexp" in errors[0] and "models.py:" in errors[0]


def test_the_prune_hooks_attribute_is_left_as_it_was():
    model = _pruned_lenet().eval()
    before = {name: m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    sr_ir.lower(model, (torch.randn(2, 1, 28, 28),))
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            assert m.weight is before[name]  # a real tensor, not the trace's fake one


class _BatchMask(nn.Module):
    """A mask built from the batch size (arange over it), as model libraries build them."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(x.shape[0]).unsqueeze(1).expand(x.size(0), 4) >= 0
        return self.fc(x).masked_fill(~keep, 0.0)


class _HalvesTheBatch(nn.Module):
    """`x.size(0) // 2`: a batch-derived integer that is no multiple of the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).reshape(x.size(0) // 2, 8)


class _WritesThroughAView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h.view(-1, 2, 2).relu_()
        return h * 2.0


class _IteratesOverTheBatch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.fc(row) for row in x])


class _IndexesTheBatch(_IteratesOverTheBatch):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.fc(x[i]) for i in range(x.shape[0])])


class _LoopsOverTheBatch(_IteratesOverTheBatch):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for _ in range(x.shape[0]):  # (no indexing at all: only the call limit stops it)
            out = self.fc(out)
        return out


def test_sizes_computed_from_the_batch_become_the_batch_symbol():
    x = (torch.randn(3, 4),)
    _both(_BatchMask(), x)
    assert _fast(_BatchMask(), x)


@pytest.mark.parametrize("model,why", [
    (_HalvesTheBatch(), "batch // 2 leaks a literal"),
    (_WritesThroughAView(), "needs torch's functionalization"),
])
def test_models_the_capture_cannot_promise_are_left_to_torch_export(model, why):
    x = (torch.randn(4, 4),)
    outcomes = []
    for way in ("export", "trace"):
        try:
            outcomes.append(fingerprint(sr_ir.lower(model.eval(), x, capture=way)))
        except SrIrError as e:  # (halving the batch does not type-check through export either)
            outcomes.append(f"{type(e).__name__}: {e}")
    assert outcomes[0] == outcomes[1]
    assert not _fast(model, x), why


class _SplitsTheBatch(_IteratesOverTheBatch):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.fc(row) for row in x.split(1)])


class _UnbindsTheBatch(_IteratesOverTheBatch):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.fc(row) for row in x.unsqueeze(1).unbind(dim=0)])


class _SplitsFeatures(nn.Module):
    """The packed attention projections of timm (`qkv.unbind(0)` over a leading 3) and GPT-2
    (`split(width, dim=2)`): per-index calls that are not over the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).reshape(x.shape[0], 3, 4).permute(1, 0, 2).unbind(0)
        a, b, c = self.qkv(x).split(4, dim=1)
        return q * k + v - a * b * c


@pytest.mark.parametrize("model", [_IteratesOverTheBatch(), _IndexesTheBatch(), _SplitsTheBatch(), _UnbindsTheBatch()])
def test_a_loop_over_the_batch_is_declined_before_it_starts(model):
    assert capture(model.eval(), (torch.randn(2, 4),), {}) is None


def test_splits_along_other_dims_stay_with_the_capture():
    x = (torch.randn(3, 4),)
    _both(_SplitsFeatures(), x)
    assert _fast(_SplitsFeatures(), x)


def test_a_trace_that_runs_on_is_declined(monkeypatch):
    import sr_ir.frontend.capture as cap

    monkeypatch.setattr(cap, "MAX_CALLS", 50)  # the real limit (20,000 calls) would make this test slow
    assert capture(_LoopsOverTheBatch().eval(), (torch.randn(2, 4),), {}) is None


def test_inputs_the_capture_declines():
    m = nn.Bilinear(4, 5, 3).eval()
    assert capture(m, (torch.randn(2, 4), torch.randn(3, 5)), {}) is None  # two leading dims: two symbols
    lin = nn.Linear(4, 3).eval()
    one = capture(lin, (torch.randn(1, 4),), {})  # batch 1: export specializes it, so does the capture
    assert one is not None and one.batch_size is None
    two = capture(lin, (torch.randn(2, 4),), {})
    assert two is not None and two.batch_size == TRACE_BATCH
    _both(lin, (torch.randn(1, 4),))


def test_capture_is_chosen_by_name():
    with pytest.raises(SrIrError, match="unknown capture 'jit'"):
        sr_ir.lower(nn.Linear(2, 2), (torch.randn(2, 2),), capture="jit")
