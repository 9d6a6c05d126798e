import torch
from torch import nn

from sr_ir.cycle.release import default_ladder, release


def _setup(dtype=torch.float32):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)
    with torch.no_grad():
        net[0].weight[net[0].weight.abs() < 0.15] = 0
        net[2].weight[:, :2] = 0
    x, y = torch.randn(64, 10, dtype=dtype), torch.randint(0, 3, (64,))
    return net, (x, y)


def test_release_fills_only_zeros_with_exactly_the_seeded_noise():
    net, batch = _setup(torch.float64)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    rec = release(net, batch, seed=3, tolerance=0.05)
    assert rec.alpha > 0 and rec.released == sum(int((before[n] == 0).sum()) for n in ("0.weight", "2.weight"))
    # The expected tensors, computed independently: one N(0, 1) draw per tensor with zeros, in parameter
    # order, from a generator seeded with the given seed; W[Z] = alpha * rms(W[~Z]) * z[Z] where the RMS
    # is over the live weights only (over the zeros too it would be smaller by sqrt(live fraction)).
    gen = torch.Generator().manual_seed(3)
    for n in ("0.weight", "2.weight"):  # the prunable (>= 2-D) tensors, both partly zero
        w = before[n]
        zero = w == 0
        rms = torch.sqrt(torch.sum(w[~zero] ** 2) / int((~zero).sum()))
        z = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        expected = torch.where(zero, rec.alpha * rms * z, w)
        torch.testing.assert_close(net.get_parameter(n).detach(), expected, rtol=1e-12, atol=0)
        assert (net.get_parameter(n)[zero] != 0).all()
    for n in ("0.bias", "2.bias"):  # vectors are not released
        assert torch.equal(net.get_parameter(n), before[n])
    assert abs(rec.loss_after - rec.loss_before) <= 0.05 * rec.loss_before + 1e-9
    assert rec.alpha == max(a for a, loss in rec.ladder if abs(loss - rec.loss_before) <= 0.05 * rec.loss_before)


def test_release_picks_the_largest_rung_within_tolerance():
    net, batch = _setup()
    rec = release(net, batch, seed=3, tolerance=10.0)  # anything goes: the top rung
    assert rec.alpha == max(default_ladder()) and len(rec.ladder) == 1


def test_release_with_zero_tolerance_keeps_function_and_reports_zero():
    net, batch = _setup()
    with torch.no_grad():
        y0 = net(batch[0])
    rec = release(net, batch, seed=3, tolerance=0.0)
    assert rec.alpha == 0.0 and len(rec.ladder) == len(default_ladder())
    with torch.no_grad():
        assert torch.equal(net(batch[0]), y0)


def test_release_is_seeded():
    a, batch = _setup()
    b, _ = _setup()
    release(a, batch, seed=11, tolerance=0.5)
    release(b, batch, seed=11, tolerance=0.5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
