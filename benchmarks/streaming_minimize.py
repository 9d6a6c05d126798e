"""Streaming minimization of a checkpoint larger than memory (issue 15).

A Llama-style model (transformers `LlamaForCausalLM`, default: hidden 4096, MLP 14336, 36 layers, 32
heads / 8 key-value heads, vocabulary 32000: 8.1B parameters, 32.4 GB of float32) is written as a
safetensors file tensor by tensor, never held: every tensor is a random normal pool (64 MB, drawn once,
half of its entries zero: "50% random zeros") read from a random offset, and in every layer `--dead` of
the MLP units get zero `gate_proj` rows (silu(0) * up = 0: the unit is dead). Then
`sr_ir.minimize_checkpoint` minimizes it and verifies the result from the written file against the
checkpoint, node by node in float64, value by value (every value both programs hold with the same type,
i.e. every layer's residual stream, attention and norm outputs, and the logits).

Memory is sampled from /proc/self/status every 20 ms on a thread: RssAnon (this process's own memory:
what the claim is about), RssFile (pages of the memory-mapped files that are resident: the kernel's page
cache, reclaimable) and VmHWM (peak RSS, both kinds together).

    nice -n 10 .venv/bin/python benchmarks/streaming_minimize.py [--layers 36] [--dead 0.5] \
        [--folder /tmp/sr-ir-stream] [--keep]

The generated files are deleted at the end unless --keep (a rerun with --keep reuses the checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from sr_ir.testing.torchvision_schemas import make_torchvision_importable  # noqa: E402


class Logits(nn.Module):
    """The causal LM on token ids, no KV cache, logits out."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.m(input_ids=ids, use_cache=False).logits


def factory(args: argparse.Namespace):
    def make() -> nn.Module:
        make_torchvision_importable()
        from transformers.models.llama.configuration_llama import LlamaConfig
        from transformers.models.llama.modeling_llama import LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                          num_hidden_layers=args.layers, num_attention_heads=args.heads,
                          num_key_value_heads=args.kv_heads, max_position_embeddings=256,
                          tie_word_embeddings=False)
        return Logits(LlamaForCausalLM(cfg)).eval()

    return make


def generate(path: Path, model: nn.Module, dead: float, seed: int = 0, chunk_rows: int = 4096) -> dict[str, Any]:
    """Write `model`'s state dict (shapes from the meta model) as safetensors without holding it: each
    tensor is the pool read from a random offset (wrapping), written slice by slice straight from the
    pool; `gate_proj` rows of the planted dead units are zeroed in a copy of one chunk of rows at a time."""
    from sr_ir.ir.weight_store import header_for

    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(1 << 24, generator=g) * 0.02
    pool[torch.rand(1 << 24, generator=g) < 0.5] = 0.0  # half the entries zero
    pool_np = pool.numpy()
    size = pool.numel()
    state = model.state_dict()
    head, order = header_for(state)
    planted = 0
    t0 = time.perf_counter()
    tmp = path.with_suffix(".partial")

    def pool_slices(pos: int, n: int):
        while n:
            take = min(n, size - pos)
            yield pool_np[pos:pos + take]
            pos, n = (pos + take) % size, n - take

    with open(tmp, "wb") as f:
        f.write(head)
        for name, _ in order:
            t = state[name]
            if name.endswith("norm.weight"):
                f.write(memoryview(torch.ones(t.shape, dtype=t.dtype).numpy()))
                continue
            rows, cols = (t.shape[0], t.numel() // t.shape[0]) if t.dim() else (1, 1)
            start = int(torch.randint(0, size, (1,), generator=g))
            if not name.endswith("mlp.gate_proj.weight"):
                for part in pool_slices(start, rows * cols):
                    f.write(memoryview(part))
                continue
            dead_rows = torch.zeros(rows, dtype=torch.bool)
            dead_rows[torch.randperm(rows, generator=g)[: int(dead * rows)]] = True
            planted += int(dead_rows.sum())
            for r0 in range(0, rows, chunk_rows):
                r1 = min(rows, r0 + chunk_rows)
                block = torch.cat([torch.from_numpy(p) for p in
                                   pool_slices((start + r0 * cols) % size, (r1 - r0) * cols)]).view(r1 - r0, cols)
                block[dead_rows[r0:r1]] = 0.0
                f.write(memoryview(block.numpy()))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"seconds": time.perf_counter() - t0, "bytes": path.stat().st_size, "dead_units": planted}


class Sampler:
    """Peak RssAnon / RssFile / VmHWM of this process, read from /proc/self/status every `period` s."""

    def __init__(self, period: float = 0.02):
        self.period, self.peak = period, {"RssAnon": 0, "RssFile": 0, "VmHWM": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
                    out[k] = int(v.split()[0]) * 1024
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            now = self.read()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], now.get(k, 0))
            self._stop.wait(self.period)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=36)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=14336)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dead", type=float, default=0.5, help="fraction of each layer's MLP units planted dead")
    ap.add_argument("--tokens", type=int, default=4, help="sequence length of the verification input")
    ap.add_argument("--folder", default="/tmp/sr-ir-stream")
    ap.add_argument("--keep", action="store_true", help="keep the generated files (a rerun reuses the checkpoint)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import sr_ir
    from sr_ir.minimization.streaming import build_on_meta

    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    big, small = folder / "big.safetensors", folder / "small.safetensors"
    make = factory(args)
    meta = build_on_meta(make)
    n_params = sum(p.numel() for p in meta.parameters())
    out: dict[str, Any] = {"config": {k: getattr(args, k) for k in ("layers", "hidden", "intermediate", "vocab",
                                                                      "heads", "kv_heads", "dead", "tokens")},
                           "params": n_params, "threads": torch.get_num_threads()}
    if not big.is_file():
        out["generate"] = generate(big, meta, args.dead)
        print("generated", json.dumps(out["generate"]), file=sys.stderr, flush=True)
    del meta
    out["checkpoint_bytes"] = big.stat().st_size
    ids = torch.randint(0, args.vocab, (1, args.tokens), generator=torch.Generator().manual_seed(1))
    base = Sampler.read()
    t0 = time.perf_counter()
    try:
        with Sampler() as s:
            r = sr_ir.minimize_checkpoint(make, (ids,), weights=big, out=small, n_random=0)
        out["seconds"] = {k: round(v, 1) for k, v in r.report.seconds.items()}
        out["wall_seconds"] = round(time.perf_counter() - t0, 1)
        out["params_after"] = r.report.params_after
        out["output_bytes"] = small.stat().st_size
        out["verification"] = r.verification
        out["memory"] = {"baseline_RssAnon": base["RssAnon"], "peak_RssAnon": s.peak["RssAnon"],
                         "peak_RssAnon_growth": s.peak["RssAnon"] - base["RssAnon"],
                         "peak_RssFile": s.peak["RssFile"], "VmHWM": s.peak["VmHWM"],
                         "machine_memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    finally:
        if not args.keep:
            for p in (big, small, small.with_suffix(".sr")):
                p.unlink(missing_ok=True)
            shutil.rmtree(folder, ignore_errors=True) if not any(folder.iterdir()) else None
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
