"""Every architecture of the zoo lowers as given, round-trips through the IR text, minimizes exactly with
its planted units removed, and the result runs at another batch size (tests/zoo/models.py)."""
import pytest
import torch

import sr_ir

from .models import ZOO, Entry, available
from .plants import random_mask


def _first(out):
    """The tensor a model returns first (Hugging Face returns a ModelOutput, LSTM a tuple)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    return _first(out[0])


def _params():
    for e in ZOO:
        # strict: an architecture that starts to work fails here until its limit is removed from the zoo
        marks = [pytest.mark.xfail(strict=True, reason=e.limit)] if e.limit else []
        yield pytest.param(e, id=f"{e.library}:{e.name}", marks=marks)


@pytest.mark.parametrize("entry", list(_params()))
def test_architecture_minimizes_as_given(entry: Entry):
    if not available(entry.library):
        pytest.skip(f"{entry.library} is not installed")
    torch.manual_seed(0)
    model = entry.build().double().eval()
    widths = entry.plant(model) if entry.plant else {}
    random_mask(model)  # the unstructured zeros a pruned model has around its dead units
    x = entry.inputs(2)
    program = sr_ir.lower(model, list(x))
    if entry.heads is not None:  # attention raised: one attention per head, so that a head can go
        assert sum(n.op == "scaled_dot_product_attention" for n in program.nodes) == entry.heads
    text = program.to_text()
    assert sr_ir.parse(text).to_text() == text
    result = sr_ir.minimize(model, list(x))
    assert result.report.verification["float64"]["max_rel"] <= 1e-10
    for name, (axis, size) in widths.items():
        assert result.program.params[name].shape[axis] == size, name
    x3 = entry.inputs(3)
    with torch.no_grad():
        want, got = _first(model(*x3)), _first(result.module(*x3))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
