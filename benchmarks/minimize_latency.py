"""CPU inference latency (batch 64) of minimized models vs the masked originals, beside their FLOP ratio.

The masked original computes densely (its zeros are still multiplied); the minimized model is what
`sr_ir.minimize` emits. FLOPs are counted by torch.utils.flop_counter on one forward.

    .venv/bin/python benchmarks/minimize_latency.py [--threads 2] [--repeat 10] [--channels-last]

`--channels-last`: both models and the input of the convolutional networks in torch.channels_last (oneDNN's
preferred layout; the default contiguous layout makes its convolutions pad channel counts that are not
multiples of its block, which the minimized widths rarely are).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sr_ir.minimization import minimize


def _plant_and_prune(m: nn.Module, sparsity: float, dead: float, unused: float, seed: int) -> nn.Module:
    """Random unstructured masks (made permanent) and, in every hidden layer, `dead` of the units with a
    zero incoming row (nonzero bias: a constant, folded) and `unused` with a zero outgoing column."""
    from torch.nn.utils import prune

    torch.manual_seed(seed)
    layers = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    for mod in layers:
        prune.random_unstructured(mod, "weight", sparsity)
        prune.remove(mod, "weight")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a, b in zip(layers, layers[1:]):
            if a.weight.shape[0] != b.weight.shape[1] or getattr(a, "groups", 1) != 1 or getattr(b, "groups", 1) != 1:
                continue  # only dense producer -> consumer pairs (a flatten or depthwise conv in between: skip)
            n = a.weight.shape[0]
            perm = torch.randperm(n, generator=g)
            d, u = perm[: int(dead * n)], perm[int(dead * n): int((dead + unused) * n)]
            a.weight[d] = 0
            a.bias[d] = -torch.rand(len(d), generator=g)  # relu(-b) = 0 / gelu(-b) != 0: both kinds occur
            b.weight[:, u] = 0
    return m


def _convnext_plant(m: nn.Module, sparsity: float, dead: float, unused: float, seed: int) -> nn.Module:
    from torch.nn.utils import prune

    torch.manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            prune.random_unstructured(mod, "weight", sparsity)
            prune.remove(mod, "weight")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stage in m.stages:
            for blk in stage:
                blk.gamma.normal_(0, 0.5, generator=g)
                h = blk.pwconv1.out_features
                perm = torch.randperm(h, generator=g)
                d, u = perm[: int(dead * h)], perm[int(dead * h): int((dead + unused) * h)]
                blk.pwconv1.weight[d] = 0
                blk.pwconv2.weight[:, u] = 0
    return m


def _flops(m: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        m(x)
    return fc.get_total_flops()


def _latency(m: nn.Module, x: torch.Tensor, repeat: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one forward, the fastest of `repeat`. The CPU time of this process is what
    the forward cost; the wall time also counts waiting while other jobs hold the shared cores."""
    with torch.no_grad():
        for _ in range(2):
            m(x)
        wall, cpu = [], []
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            m(x)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--channels-last", action="store_true",
                    help="run the convolutional models (masked and minimized) and their inputs in channels_last")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from sr_ir.models.cnn import VGG
    from sr_ir.models.convnext import convnext_tiny
    from sr_ir.models.lenet import lenet300_100

    cases = [
        ("LeNet-300-100 90%", _plant_and_prune(lenet300_100(), 0.9, 0.5, 0.1, 0), (a.batch, 784)),
        ("VGG (BN, 3x3 pad 1) 90%", _plant_and_prune(VGG().eval(), 0.9, 0.3, 0.1, 0), (a.batch, 3, 32, 32)),
        ("ConvNeXt-Tiny 90%", _convnext_plant(convnext_tiny().eval(), 0.9, 0.4, 0.1, 0), (a.batch, 3, 64, 64)),
    ]
    print(f"batch {a.batch}, {a.threads} thread(s), fastest of {a.repeat}, "
          f"{'channels_last' if a.channels_last else 'contiguous'} layout; masked = dense compute on zeros; "
          f"ms = CPU time of the forward (wall time in brackets)")
    print(f"{'model':<26} {'params':>12} {'params min':>12} {'FLOP ratio':>10} {'ms masked':>18} {'ms min':>18} {'speed-up':>9}")
    for name, m, shape in cases:
        x = torch.randn(*shape)
        res = minimize(m, (x[:2],), verify=True, n_random=1)
        small = res.module.eval()
        f0, f1 = _flops(m, x), _flops(small, x)
        if a.channels_last and x.dim() == 4:
            fmt = torch.channels_last
            m, small, x = m.to(memory_format=fmt), small.to(memory_format=fmt), x.contiguous(memory_format=fmt)
        (w0, c0), (w1, c1) = _latency(m, x, a.repeat), _latency(small, x, a.repeat)
        p0 = sum(p.numel() for p in m.parameters())
        p1 = sum(p.numel() for p in small.parameters())
        print(f"{name:<26} {p0:>12,} {p1:>12,} {f0 / f1:>10.2f} {c0 * 1e3:>8.1f} ({w0 * 1e3:>7.1f}) "
              f"{c1 * 1e3:>8.1f} ({w1 * 1e3:>7.1f}) {c0 / c1:>9.2f}")


if __name__ == "__main__":
    main()
