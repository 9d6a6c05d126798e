import pytest
import torch
from torch import nn

from sr_ir.cycle.pruning import (
    PruneSpec,
    apply_masks,
    full_masks,
    group_norm_penalty,
    nonzero_masks,
    output_parameter,
    prunable_parameters,
    prune_step,
    sparsity,
)
from sr_ir.errors import SrIrError


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.dw = nn.Conv2d(4, 4, 3, groups=4)
        self.norm = nn.LayerNorm(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        y = self.dw(self.conv(x)).mean((-2, -1))
        return self.fc(self.norm(y))


def test_prunable_by_dimensionality():
    torch.manual_seed(0)
    names = set(prunable_parameters(Net()))
    assert names == {"conv.weight", "dw.weight", "fc.weight"}  # biases and norm scales never


def test_output_parameter_is_the_logit_layer():
    torch.manual_seed(0)
    assert output_parameter(Net(), (torch.randn(1, 2, 8, 8),)) == "fc.weight"


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_removes_exact_count_smallest_first(scope):
    torch.manual_seed(0)
    net = Net()
    masks = full_masks(net)
    new = prune_step(net, masks, PruneSpec(0.25, "magnitude", scope))
    total = sum(m.numel() for m in masks.values())
    removed = sum(int((~m).sum()) for m in new.values())
    if scope == "layer":
        assert removed == sum(int(0.25 * m.numel()) for m in masks.values())
        for n, p in prunable_parameters(net).items():
            assert p.detach().abs()[~new[n]].max() <= p.detach().abs()[new[n]].min()
    else:
        assert removed == int(0.25 * total)
        params = prunable_parameters(net)
        dropped = torch.cat([params[n].detach().abs()[~new[n]] for n in new])
        kept = torch.cat([params[n].detach().abs()[new[n]] for n in new])
        assert dropped.max() <= kept.min()
    # a second step prunes 25% of what is still alive, never resurrects
    newer = prune_step(net, new, PruneSpec(0.25, "magnitude", scope))
    assert all(bool((newer[n] <= new[n]).all()) for n in new)
    assert sparsity(newer) > sparsity(new)


def test_global_magnitude_keeps_every_tensor_alive():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        net.dw.weight.mul_(1e-6)  # a global ranking would empty this tensor
    new = prune_step(net, full_masks(net), PruneSpec(0.9, "magnitude", "global", min_keep=2))
    assert int(new["dw.weight"].sum()) == 2


def test_unit_criterion_removes_whole_groups_and_protects_logits():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    masks = full_masks(mlp)
    new = prune_step(mlp, masks, PruneSpec(0.4, "unit", "layer"), protect_rows=["2.weight"])
    w0, w2 = new["0.weight"], new["2.weight"]
    assert (w2.any(dim=1)).all()  # logit rows intact
    # every pruned position belongs to a fully pruned row or column
    for m in (w0, w2):
        dead_rows = ~m.any(dim=1)
        dead_cols = ~m.any(dim=0)
        assert bool((m | dead_rows[:, None] | dead_cols[None, :]).all())
        assert (~m).any()
    assert int((~w0.any(dim=1)).sum()) == int(0.4 * 5)


def test_unit_rms_counts_pruned_weights_so_half_dead_units_go_first():
    lin = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0]]))
    masks = {"weight": torch.ones(3, 4, dtype=torch.bool)}
    masks["weight"][2, 1:] = False  # row 2 has one large weight left: RMS 1.5 < 2 but > 1
    new = prune_step(lin, masks, PruneSpec(0.34, "unit", "layer"))  # one row, one column
    assert not new["weight"][0].any()
    assert new["weight"][1].any()


def test_apply_and_nonzero_masks_round_trip():
    torch.manual_seed(0)
    net = Net()
    new = prune_step(net, full_masks(net), PruneSpec(0.5))
    apply_masks(net, new)
    again = nonzero_masks(net)
    assert all(torch.equal(again[n], new[n]) for n in new)


def test_group_penalty_is_differentiable_and_zero_free():
    torch.manual_seed(0)
    net = Net()
    pen = group_norm_penalty(net, ["conv.weight", "fc.weight"], ["fc.weight"])
    pen.backward()
    assert pen.item() > 0 and torch.isfinite(net.conv.weight.grad).all()


@pytest.mark.parametrize("kw", [dict(amount=0.0), dict(amount=1.0), dict(criterion="random"), dict(scope="net")])
def test_bad_spec_is_a_clear_error(kw):
    with pytest.raises(SrIrError):
        PruneSpec(**kw)
