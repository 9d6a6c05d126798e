"""The fast capture (`lower(..., capture="trace")`, sr_ir/frontend/capture.py) against torch.export
(`capture="export"`) on every model of the test zoo (tests/zoo/models.py) and the bundled models: the
programs must be identical -- IR text, every node's source line, buffers, name map and the weights'
bits (`capture.fingerprint`) -- up to the numbering of value names (`%mul_14` / `%mul_10`: export spends
names on its symbolic size arithmetic); the `names` column says where the names are identical too. Also reports which models the capture itself
lowered (`fast`) and which it left to torch.export (`export`), with the warm CPU time of each way.

    .venv/bin/python benchmarks/capture_equivalence.py [--only NAME ...] [--batch 2]

Exit status 1 when any model differs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable

import torch

from sr_ir.testing.torchvision_schemas import make_torchvision_importable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def models(batch: int) -> list[tuple[str, Callable[[], torch.nn.Module], Callable[[], tuple[Any, ...]]]]:
    """(name, build, inputs) for the zoo's entries whose library is installed and the bundled models."""
    from sr_ir.models import transformers as tr
    from sr_ir.models.cnn import VGG, SmallCNN
    from sr_ir.models.convnext import convnext_small_test, convnext_tiny
    from sr_ir.models.lenet import example_inputs as lenet_inputs
    from sr_ir.models.lenet import lenet300_100
    from tests.frontend.models import PreLNEncoder
    from tests.zoo.models import ZOO, available

    out: list[tuple[str, Callable[[], torch.nn.Module], Callable[[], tuple[Any, ...]]]] = []
    for e in ZOO:
        if available(e.library):
            out.append((f"{e.library} {e.name}", e.build, lambda e=e: tuple(e.inputs(batch))))
    image = lambda size: (lambda: (torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)),))
    out += [
        ("bundled LeNet-300-100", lenet300_100, lambda: lenet_inputs(batch)),
        ("bundled SmallCNN", SmallCNN, lambda: (torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(0)),)),
        ("bundled VGG", VGG, image(32)),
        ("bundled ConvNeXt (small test)", convnext_small_test, image(32)),
        ("bundled ConvNeXt-Tiny", convnext_tiny, image(64)),
        ("bundled pruned LeNet (prune hooks kept)", _pruned_lenet, lambda: lenet_inputs(batch)),
        ("tests PreLNEncoder", PreLNEncoder, lambda: (torch.randint(0, 50, (batch, 12)),)),
    ]
    for family in sorted(tr.FAMILIES):
        cfg = tr.small_config(family)
        out.append((f"bundled transformer {family}", lambda f=family: tr.build(f),
                    lambda cfg=cfg: (tr.example_ids(cfg, batch),)))
    return out


def _pruned_lenet() -> torch.nn.Module:
    """LeNet with torch.nn.utils.prune masks left as hooks (weight = weight_orig * weight_mask)."""
    from torch.nn.utils import prune

    from sr_ir.models.lenet import lenet300_100

    torch.manual_seed(0)
    m = lenet300_100()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear):
            prune.random_unstructured(mod, "weight", 0.5)
    return m


def compare(build: Callable[[], torch.nn.Module], inputs: Callable[[], tuple[Any, ...]]) -> dict[str, Any]:
    """Lower one model both ways (each twice: the second, warm, call is timed)."""
    from sr_ir import lower
    from sr_ir.frontend.capture import fingerprint
    from sr_ir.frontend.lower import _graph_name, _lower_traced
    from sr_ir.minimization.api import resolve_rules

    torch.manual_seed(0)
    try:
        model = build().eval()
    except Exception as e:  # a library that does not import in this environment (a torchvision build
        # that does not match torch, say): reported as skipped, not as a difference
        return {"skipped": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    x = inputs()
    floats = {t.dtype for t in x if isinstance(t, torch.Tensor) and t.is_floating_point()}
    if floats == {torch.float64}:  # the zoo's image and sequence inputs are float64, as its tests run the models
        model = model.double()
    row: dict[str, Any] = {}
    texts, exact = {}, {}
    for way in ("export", "trace"):
        try:
            lower(model, x, capture=way)
            c0 = time.process_time()
            prog = lower(model, x, capture=way)
            row[way] = time.process_time() - c0
            texts[way], exact[way] = fingerprint(prog, value_names=False), fingerprint(prog)
        except Exception as e:  # both ways must fail alike
            texts[way] = exact[way] = f"error {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            row[way] = float("nan")
    rules = resolve_rules(None)
    row["path"] = "fast" if _lower_traced(model, x, True, rules, _graph_name(type(model).__name__), None) else "export"
    row["same"] = texts["export"] == texts["trace"]
    row["names"] = "same names" if exact["export"] == exact["trace"] else "renumbered"
    row["note"] = texts["export"][:80] if texts["export"].startswith("error") else ""
    if not row["same"]:
        import difflib

        diff = difflib.unified_diff(texts["export"].splitlines(), texts["trace"].splitlines(), lineterm="", n=0)
        row["diff"] = "\n".join(list(diff)[2:12])
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="substrings of the model names to run")
    ap.add_argument("--batch", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    make_torchvision_importable()
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name, build, inputs in models(a.batch):
        if a.only and not any(s.lower() in name.lower() for s in a.only):
            continue
        r = compare(build, inputs)
        r["name"] = name
        if "skipped" in r:
            skipped.append(name)
            print(f"{name:<46} skipped   (the model does not build here: {r['skipped'][:70]})", flush=True)
            continue
        rows.append(r)
        print(f"{name:<46} {'same' if r['same'] else 'DIFFERENT':<9} {r['names'] if r['same'] else '':<10} "
              f"{r['path']:<6} export {r['export']:6.3f} s"
              f"  trace {r['trace']:6.3f} s  {r['note']}", flush=True)
        if not r["same"]:
            print("   " + r["diff"].replace("\n", "\n   "))
    same = sum(r["same"] for r in rows)
    fast = sum(r["path"] == "fast" for r in rows)
    ok = [r for r in rows if r["export"] == r["export"] and r["trace"] == r["trace"]]
    ratio = sum(r["trace"] for r in ok) / max(sum(r["export"] for r in ok), 1e-9)
    renamed = sum(r["same"] and r["names"] == "renumbered" for r in rows)
    print(f"{same}/{len(rows)} identical ({renamed} of them up to value names); {fast} lowered by the capture itself, {len(rows) - fast} left to "
          f"torch.export; {len(skipped)} skipped (not buildable here); warm CPU time trace / export over the "
          f"models that lower: {ratio:.2f}")
    sys.exit(0 if same == len(rows) else 1)


if __name__ == "__main__":
    main()
