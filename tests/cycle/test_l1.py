"""The elementwise L1 term of fine-tuning (TrainSpec.l1): its value and gradient exactly, the gradient Adam
steps with in fine_tune (cross-entropy plus ``l1 * sign(w)`` on the masked tensors only), the default off,
the flat preset name, and dense training without it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from sr_ir.cycle import CycleConfig, TrainSpec, squeeze_release
from sr_ir.cycle import cycle as cycle_mod
from sr_ir.cycle.pruning import l1_penalty
from sr_ir.cycle.train import fine_tune
from sr_ir.errors import SrIrError


def _net() -> nn.Sequential:
    net = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.5, -1.5, 0.0], [2.0, 0.25, -0.75]]))
        net[0].bias.copy_(torch.tensor([0.1, -0.2]))
        net[2].weight.copy_(torch.tensor([[-1.0, 0.5], [0.0, 3.0]]))
        net[2].bias.copy_(torch.tensor([0.3, 0.0]))
    return net


def test_penalty_value_and_gradient_exactly():
    net = _net()
    pen = l1_penalty(net, ["0.weight", "2.weight"])
    assert pen.item() == 0.5 + 1.5 + 0.0 + 2.0 + 0.25 + 0.75 + 1.0 + 0.5 + 0.0 + 3.0
    pen.backward()
    # d|w|/dw = sign(w), and 0 at an exact zero: a pruned weight gets no pull
    assert torch.equal(net[0].weight.grad, torch.tensor([[1.0, -1.0, 0.0], [1.0, 1.0, -1.0]], dtype=torch.float64))
    assert torch.equal(net[2].weight.grad, torch.tensor([[-1.0, 1.0], [0.0, 1.0]], dtype=torch.float64))
    assert net[0].bias.grad is None  # only the named tensors
    assert l1_penalty(net, []).item() == 0.0


class _Recording(torch.optim.Adam):
    """Adam that records the gradients of its first step."""

    grads: dict[int, torch.Tensor] = {}

    def step(self, closure=None):  # type: ignore[override]
        if not _Recording.grads:
            _Recording.grads = {id(p): p.grad.detach().clone() for g in self.param_groups for p in g["params"]}
        return super().step(closure)


@pytest.mark.parametrize("l1", [0.0, 0.05])
def test_fine_tune_adds_l1_sign_on_masked_tensors_only(monkeypatch, l1):
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
    net = _net()
    ref = _net()
    masks = {"0.weight": torch.ones(2, 3, dtype=torch.bool), "2.weight": torch.tensor([[True, False], [True, True]])}
    with torch.no_grad():
        ref[2].weight.mul_(masks["2.weight"])
    F.cross_entropy(ref(x), y).backward()  # one batch holds the whole set: the order does not matter
    monkeypatch.setattr(torch.optim, "Adam", _Recording)
    _Recording.grads = {}
    fine_tune(net, TensorDataset(x, y), TrainSpec(epochs=1, batch_size=16, l1=l1), seed=0, tag="t", masks=masks)
    got = {n: _Recording.grads[id(p)] for n, p in net.named_parameters()}
    want = {n: p.grad for n, p in ref.named_parameters()}
    for n in ("0.weight", "2.weight"):
        w = dict(ref.named_parameters())[n].detach()
        assert torch.allclose(got[n], want[n] + l1 * torch.sign(w), atol=1e-12, rtol=0)
    for n in ("0.bias", "2.bias"):  # not in the masks: no L1 pull
        assert torch.allclose(got[n], want[n], atol=1e-12, rtol=0)


def test_default_off_and_negative_refused():
    assert TrainSpec().l1 == 0.0
    with pytest.raises(SrIrError, match="l1 must be >= 0"):
        TrainSpec(l1=-1e-5)


def test_l1_is_a_flat_setting_and_round_trips():
    cfg = CycleConfig.preset("faithful", l1=2e-5)
    assert cfg.train.l1 == 2e-5 and CycleConfig.preset("faithful").train.l1 == 0.0
    assert CycleConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["train"]["l1"]  # a checkpoint written before the option: read as l1 = 0
    assert CycleConfig.from_dict(old).train.l1 == 0.0


class _Stop(Exception):
    pass


def test_dense_training_runs_without_l1(monkeypatch):
    seen = []

    def record(model, dataset, spec, **kw):
        seen.append((kw["tag"], spec))
        raise _Stop

    monkeypatch.setattr(cycle_mod, "fine_tune", record)
    ds = TensorDataset(torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,)))
    cfg = CycleConfig.preset("faithful", dense_epochs=1.0, l1=1e-3, batch_size=4)
    with pytest.raises(_Stop):
        squeeze_release(_net(), ds, ds, example_inputs=(ds.tensors[0][:2],), config=cfg, progress=False)
    (tag, spec), = seen
    assert tag == "dense" and spec.l1 == 0.0 and spec.epochs == 1.0
