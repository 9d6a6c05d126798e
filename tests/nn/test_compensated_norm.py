"""CompensatedLayerNorm / CompensatedRMSNorm equal the full norms on the kept channels."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr_ir.nn import CompensatedLayerNorm, CompensatedRMSNorm, compensated_layer_norm, compensated_rms_norm, rms_norm


def _plant(n: int, removed: list[int], seed: int = 0, scale: float = 1.0, dtype=torch.float64):
    """An input whose removed channels hold constants, the constants, and the kept index."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, n, generator=g, dtype=dtype)
    consts = torch.randn(len(removed), generator=g, dtype=dtype) * scale
    x[..., removed] = consts
    keep = [i for i in range(n) if i not in removed]
    return x, consts, keep


def _layer_norm(n: int, seed: int = 1, dtype=torch.float64) -> nn.LayerNorm:
    ln = nn.LayerNorm(n, eps=1e-6).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ln.weight.copy_(torch.randn(n, generator=g, dtype=dtype))
        ln.bias.copy_(torch.randn(n, generator=g, dtype=dtype))
    return ln


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach() / b.abs().max().detach())


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_layer_norm_exact_on_kept_channels_f64(scale):
    n, removed = 16, [0, 3, 4, 11, 15]
    x, consts, keep = _plant(n, removed, scale=scale)
    ln = _layer_norm(n)
    cln = CompensatedLayerNorm.from_layer_norm(ln, keep, consts)
    assert cln.kept == 11 and cln.n_total == 16 and cln.removed == 5
    ref = ln(x)[..., keep]
    assert _rel(cln(x[..., keep]), ref) <= 1e-12


def test_naive_slicing_is_wrong():
    """What peers do (LayerNorm over the kept channels) changes the statistics: error of order one."""
    n, removed = 16, [0, 3, 4, 11, 15]
    x, consts, keep = _plant(n, removed, scale=3.0)
    ln = _layer_norm(n)
    naive = F.layer_norm(x[..., keep], (len(keep),), ln.weight[keep], ln.bias[keep], ln.eps)
    assert _rel(naive, ln(x)[..., keep]) > 1e-2


def test_layer_norm_float32_rounding_level():
    n, removed = 64, list(range(0, 64, 3))
    x64, consts, keep = _plant(n, removed, scale=2.0)
    ln = _layer_norm(n)
    cln = CompensatedLayerNorm.from_layer_norm(ln, keep, consts).float()
    ref = ln(x64)[..., keep]
    got = cln(x64.float()[..., keep]).double()
    full32 = ln.float()(x64.float())[..., keep].double()
    # the compensated float32 result is as close to the float64 truth as the full float32 norm is
    assert _rel(got, ref) <= max(4 * _rel(full32, ref), 1e-6)


def test_no_removal_is_layer_norm():
    x = torch.randn(4, 7, dtype=torch.float64)
    ln = _layer_norm(7)
    cln = CompensatedLayerNorm.from_layer_norm(ln, list(range(7)), [])
    assert _rel(cln(x), ln(x)) <= 1e-15
    assert _rel(compensated_layer_norm(x, None, None, 7, 0.0, 0.0, 1e-6), F.layer_norm(x, (7,), eps=1e-6)) <= 1e-14


def test_composition_of_two_compensations():
    n = 20
    x, consts, _ = _plant(n, [1, 2, 9, 13, 17, 19])
    ln = _layer_norm(n)
    first_removed = [1, 9, 17]
    keep1 = [i for i in range(n) if i not in first_removed]
    c1 = CompensatedLayerNorm.from_layer_norm(ln, keep1, x[0, 0, first_removed])
    # second step: remove (positions in keep1 of) channels 2, 13, 19
    second = [keep1.index(c) for c in (2, 13, 19)]
    keep2 = [j for j in range(len(keep1)) if j not in second]
    c2 = c1.compensate(keep2, x[0, 0, [2, 13, 19]])
    final = [keep1[j] for j in keep2]
    assert c2.kept == n - 6 and c2.n_total == n
    assert _rel(c2(x[..., final]), ln(x)[..., final]) <= 1e-12


def test_removed_channel_with_zero_gamma_is_constant_beta():
    """The rule behind removing a stream channel: gamma_c = 0 makes the output channel the constant beta_c."""
    ln = _layer_norm(8)
    with torch.no_grad():
        ln.weight[5] = 0.0
    y = ln(torch.randn(10, 8, dtype=torch.float64))
    assert torch.equal(y[:, 5], ln.bias[5].expand(10))


def test_rms_norm_exact_and_functional_forms():
    n, removed = 12, [2, 5, 6]
    x, consts, keep = _plant(n, removed, scale=5.0)
    x[..., keep[2]] = 0.7  # removed in the second compensation
    w = torch.randn(n, dtype=torch.float64)
    full = F.rms_norm(x, (n,), w, 1e-6)
    assert _rel(rms_norm(x, w, 1e-6), full) <= 1e-14
    s2 = float((consts**2).sum())
    assert _rel(compensated_rms_norm(x[..., keep], w[keep], n, s2, 1e-6), full[..., keep]) <= 1e-12
    norm = nn.RMSNorm(n, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.copy_(w)
    c = CompensatedRMSNorm.from_rms_norm(norm, keep, consts)
    assert _rel(c(x[..., keep]), full[..., keep]) <= 1e-12
    c2 = c.compensate([0, 1, 3, 4, 5, 6, 7, 8], x[0, 0, [keep[2]]])
    final = [keep[j] for j in [0, 1, 3, 4, 5, 6, 7, 8]]
    assert _rel(c2(x[..., final]), full[..., final]) <= 1e-12
    # eps=None is the dtype's epsilon, as F.rms_norm
    assert _rel(rms_norm(x, w, None), F.rms_norm(x, (n,), w)) <= 1e-14


def test_bad_arguments_are_clear():
    ln = _layer_norm(6)
    with pytest.raises(ValueError, match="2 channels removed but 1 constants"):
        CompensatedLayerNorm.from_layer_norm(ln, [0, 1, 2, 3], [1.0])
    with pytest.raises(ValueError, match="out of range"):
        CompensatedLayerNorm.from_layer_norm(ln, [0, 9], [0.0] * 4)
    with pytest.raises(ValueError, match="repeated"):
        CompensatedLayerNorm.from_layer_norm(ln, [1, 1], [0.0] * 4)
    with pytest.raises(ValueError, match="n_total"):
        compensated_layer_norm(torch.zeros(2, 5), None, None, 4)


def _trained_cln():
    n, removed = 10, [1, 4, 8]
    x, consts, keep = _plant(n, removed, dtype=torch.float32)
    ln = _layer_norm(n, dtype=torch.float32)
    return CompensatedLayerNorm.from_layer_norm(ln, keep, consts), x[..., keep], ln(x)[..., keep]


def test_gradients_flow_to_kept_gamma_beta_only():
    cln, x, _ = _trained_cln()
    cln(x).square().sum().backward()
    assert cln.weight.grad is not None and cln.bias.grad is not None
    assert [n for n, _ in cln.named_parameters()] == ["weight", "bias"]
    assert sorted(n for n, _ in cln.named_buffers()) == ["s1", "s2"]


def test_state_dict_round_trip():
    cln, x, ref = _trained_cln()
    buf = io.BytesIO()
    torch.save(cln.state_dict(), buf)
    buf.seek(0)
    fresh = CompensatedLayerNorm(cln.kept, cln.n_total, eps=cln.eps)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh(x), cln(x))
    assert cln.state_dict()["_extra_state"].tolist() == [7, 10]
    with pytest.raises(ValueError, match="state dict is for kept=7, n_total=10"):
        CompensatedLayerNorm(7, 12).load_state_dict(cln.state_dict())
    r = CompensatedRMSNorm(4, 9, 2.5, 1e-6)
    r2 = CompensatedRMSNorm(4, 9, eps=1e-6)
    r2.load_state_dict(r.state_dict())
    assert float(r2.s2) == 2.5


def test_torch_export():
    cln, x, ref = _trained_cln()
    ep = torch.export.export(cln, (x,))
    assert torch.allclose(ep.module()(x), ref, atol=1e-5, rtol=0)
    r = CompensatedRMSNorm(7, 10, 3.0, 1e-6)
    xr = torch.randn(2, 3, 7)
    assert torch.equal(torch.export.export(r, (xr,)).module()(xr), r(xr))


def test_torch_compile():
    cln, x, ref = _trained_cln()
    compiled = torch.compile(cln, backend="aot_eager", fullgraph=True)
    assert torch.allclose(compiled(x), cln(x), atol=1e-6, rtol=0)


def test_onnx_export_runs_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    cln, x, ref = _trained_cln()
    path = tmp_path / "cln.onnx"
    import warnings

    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
        warnings.simplefilter("ignore")
        torch.onnx.export(cln, (x,), str(path), input_names=["x"], output_names=["y"], dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": x.numpy()})
    assert float((torch.from_numpy(y) - ref.detach()).abs().max()) <= 1e-5
