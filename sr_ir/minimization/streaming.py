"""Minimize a checkpoint larger than memory: the same engine and rules, with weights that stay on disk.

`minimize_checkpoint(factory, example_inputs, weights="big.safetensors", out="small.safetensors")`:

1. **Shapes only.** The factory builds the model with its parameters on the meta device (no memory;
   buffers the model computes itself, such as rotary frequencies, stay real), then every parameter and
   stored buffer becomes a zero-copy view of the memory-mapped checkpoint (`SafetensorsFile`). A name
   the checkpoint lacks, or a shape or dtype that differs, is a one-line error before anything runs.
2. **Lowering** runs as for `sr_ir.minimize` (torch.export reads shapes, never values), and the
   program's weights that are views of the checkpoint become `Deferred` tensors: dtype and shape
   without values (`sr_ir.ir.weight_store`).
3. **The engine, unchanged** (`minimize_program`: facts, planning, rewrites, to a fixpoint). A rule
   condition that reads a weight evaluates it for that operation only (a view of the map; the pages
   are the kernel's page cache, not this process's memory); dropping channels is `index_select`,
   which on a `Deferred` tensor only extends its recipe. What a rule *computes* (a folded bias) is an
   ordinary tensor, made by the rule's own expression as in memory.
4. **Writing**, one tensor at a time: each recipe is evaluated (the map, then its selections),
   written and dropped (`write_safetensors`, atomic). Beside it, the program text (``small.sr``,
   paired with the weights as `Program.save` pairs them), so ``sr_ir.load("small.sr")`` reads the
   result back.
5. **Verification** from the files just written: the original program (over the checkpoint) and the
   minimized one (over the new file) run node by node in the interpreter (`run_program`, each weight
   read for the node that uses it), retyped to float64; every value the two programs both have with
   the same type (the residual stream after each layer, each attention output, the logits...) is
   compared, so a difference is reported at the first layer where it appears.

Memory: the largest few tensors a single operation touches (one weight, a float64 copy of it while a
condition compares it, activations), plus what rules compute (small: biases). The page cache the
maps fill is reclaimable and is not this process's anonymous memory.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from ..comparison import cast_inputs, difference, random_like
from ..errors import SrIrError, VerificationError
from ..ir.program import Program
from ..ir.weight_store import Deferred, SafetensorsFile, materialize, write_safetensors
from .api import RulesArg, minimize_program, resolve_rules
from .report import MinimizeReport

# Relative to max |y| of the original value (float64 rounding is ~1e-15 there).
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


@dataclass(repr=False)
class StreamedMinimized:
    """What `minimize_checkpoint` did: the minimized program (its weights: recipes over the written
    file), the report, the files written, and the layer-by-layer comparison."""

    program: Program
    report: MinimizeReport
    original: Program
    written: list[Path]
    verification: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        r = self.report
        v = self.verification.get("max_rel")
        checked = f"verified {self.verification['dtype']} rel err {v:.2g} over {self.verification['values']} values" \
            if v is not None else "not verified"
        return f"StreamedMinimized(params {r.params_before:,} -> {r.params_after:,}, {checked})"


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device (what accelerate's `init_empty_weights`
    does): every `nn.Parameter` a module registers is moved to meta as it is registered, so the
    initializers that follow run on meta, and nothing of a parameter's size is ever filled. Buffers stay
    as the model makes them (rotary frequencies are computed, not stored)."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_on_meta(factory: Callable[[], nn.Module], spec: str = "the factory") -> nn.Module:
    """`factory()` with its parameters on the meta device (see `parameters_on_meta`)."""
    from ..errors import describe

    try:
        with parameters_on_meta():
            model = factory()
    except SrIrError:
        raise
    except Exception as e:
        raise SrIrError(f"calling {spec} failed: {describe(e)}") from None
    if not isinstance(model, nn.Module):
        raise SrIrError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return model


def attach_checkpoint(model: nn.Module, ckpt: SafetensorsFile) -> None:
    """Point every parameter and stored buffer of `model` at the checkpoint's tensor of its state_dict
    name (a view of the map: no copy). Tied parameters stay tied. SrIrError, one line, when a name is
    missing from the file, the file has names the model lacks, or a shape or dtype differs."""
    own = model.state_dict(keep_vars=True)
    persistent = set(own)
    wrong = []
    for name, t in own.items():
        if name in ckpt:
            info = ckpt.infos[name]
            if tuple(t.shape) != info.shape or t.dtype != info.dtype:
                wrong.append(f"{name} is {list(info.shape)} {str(info.dtype).replace('torch.', '')} in the file, "
                             f"{list(t.shape)} {str(t.dtype).replace('torch.', '')} in the model")
    if wrong:
        raise SrIrError(f"{ckpt.path} does not match the model: {'; '.join(wrong[:3])}"
                        + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    seen: dict[int, Any] = {}  # id of the old tensor -> its replacement (a tied weight is replaced once)
    missing = []
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        prefix = f"{mod_name}." if mod_name else ""
        for pname, p in list(mod._parameters.items()):
            if p is None:
                continue
            key = prefix + pname
            if id(p) in seen:
                mod._parameters[pname] = seen[id(p)]
                continue
            if key not in ckpt:
                continue  # a tied parameter's other name may be the one stored: resolved below
            new = nn.Parameter(ckpt.tensor(key), requires_grad=False)
            seen[id(p)] = new
            mod._parameters[pname] = new
        for bname, b in list(mod._buffers.items()):
            key = prefix + bname
            if b is not None and key in persistent and key in ckpt:
                mod._buffers[bname] = ckpt.tensor(key)
    # a second pass: tied parameters whose first name was not stored, now that the stored name is known
    for mod_name, mod in model.named_modules(remove_duplicate=False):
        prefix = f"{mod_name}." if mod_name else ""
        for pname, p in list(mod._parameters.items()):
            if p is not None and id(p) in seen:
                mod._parameters[pname] = seen[id(p)]
    for name, t in model.state_dict(keep_vars=True).items():
        if t.device.type == "meta":
            missing.append(name)
    unexpected = sorted(set(ckpt.names()) - set(model.state_dict()))
    if missing or unexpected:
        raise SrIrError(f"{ckpt.path} does not match the model: missing {missing[:3]}"
                        + (f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
                        + f", unexpected {unexpected[:3]}" + (f" (and {len(unexpected) - 3} more)" if len(unexpected) > 3 else ""))


def deferred_weights(program: Program, ckpt: SafetensorsFile) -> int:
    """Replace the program's weights that are the checkpoint's tensors (views of its map, as the lowering
    read them from the model) by `Deferred` tensors over the file; how many were replaced. Weights the
    lowering computed (a folded mask product, an index table) stay as they are."""
    views: dict[tuple, str] = {}
    for name, info in ckpt.infos.items():
        t = ckpt.tensor(name)
        if t.numel():
            views[(t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)] = name
    made: dict[str, Deferred] = {}
    n = 0
    for pname, w in list(program.weights.items()):
        if isinstance(w, Deferred) or not w.numel() or w.device.type != "cpu":
            continue
        key = views.get((w.data_ptr(), tuple(w.shape), w.stride(), w.dtype))
        if key is None:
            continue
        if key not in made:
            made[key] = ckpt.deferred(key)
        program.weights[pname] = made[key]  # one object for a tensor read under two names (tied)
        n += 1
    return n


def minimize_checkpoint(
    model: nn.Module | Callable[[], nn.Module],
    example_inputs: Sequence[Any],
    *,
    weights: str | os.PathLike[str],
    out: str | os.PathLike[str],
    rules: RulesArg = None,
    verify: bool = True,
    n_random: int = 1,
    tolerance: dict[torch.dtype, float] | None = None,
    strict: bool = False,
    progress: bool = False,
) -> StreamedMinimized:
    """Minimize the model of `weights` (a safetensors state dict) without holding it in memory, and write
    the result as `out` (``.safetensors``) with its program text beside it (``<stem>.sr``).

    `model` is a factory (called with its parameters on the meta device) or a module whose parameters
    are replaced by views of the checkpoint (build it under `parameters_on_meta` to avoid allocating
    them). `example_inputs` are what the model is exported and verified on, plus `n_random` random
    inputs like them. With `verify`, the original and the result are run node by node from their files
    in float64 and every value both programs hold with the same type is compared; a difference beyond
    `tolerance` (relative to the value's max |y|) raises VerificationError naming the first such value,
    after which the written files are removed.

    >>> r = sr_ir.minimize_checkpoint(make_model, (ids,), weights="big.safetensors",
    ...                               out="small.safetensors")  # doctest: +SKIP
    >>> small = sr_ir.load("small.sr")  # doctest: +SKIP
    """
    from ..frontend import lower

    out = Path(out)
    if out.suffix != ".safetensors":
        raise SrIrError(f"{out}: a streamed minimization writes a .safetensors file (its program text goes beside it as .sr)")
    if out.is_dir():
        raise SrIrError(f"{out}: is a folder; give a file name to write")
    ckpt = SafetensorsFile(weights)
    if Path(weights).resolve() == out.resolve():
        raise SrIrError(f"{out}: would overwrite the checkpoint being read; write another file")
    rs = resolve_rules(rules)
    t0 = time.perf_counter()
    module = model if isinstance(model, nn.Module) else build_on_meta(model)
    attach_checkpoint(module, ckpt)
    if not example_inputs:
        raise SrIrError("minimize_checkpoint needs example inputs for the model")
    original = lower(module.eval(), example_inputs, rules=rs)
    del module  # its parameters are views of the map; the program holds what it reads
    replaced = deferred_weights(original, ckpt)
    big = [n for n, w in original.weights.items() if not isinstance(w, Deferred) and w.numel() * w.element_size() > 64 << 20]
    if big:
        raise SrIrError(f"parameter {big[0]!r} is computed from the checkpoint's tensors while lowering (a mask "
                        f"product, a transpose): streaming reads stored tensors only; store it as the model reads it")
    t_lower = time.perf_counter() - t0
    program, report = minimize_program(original, rs, progress=progress, strict=strict)
    report.seconds["lower"] = t_lower
    t1 = time.perf_counter()
    text_path = out.with_suffix(".sr")
    written = write_program(program, text_path, out)
    report.seconds["write"] = time.perf_counter() - t1
    result = StreamedMinimized(program, report, original, written)
    result.verification = {"deferred_weights": replaced}
    if verify:
        t2 = time.perf_counter()
        try:
            reread = read_back(text_path, out, rs)
            inputs = [list(example_inputs)] + [random_like(example_inputs, 1234 + i) for i in range(n_random)]
            result.verification.update(compare_streaming(original, reread, inputs, rs, tolerance))
        except VerificationError:
            for p in written:
                p.unlink(missing_ok=True)
            raise
        report.seconds["verify"] = time.perf_counter() - t2
        report.verification = {"float64": {"max_abs": result.verification["max_abs"],
                                           "max_rel": result.verification["max_rel"], "worst_inputs": "streamed"},
                               "checks": result.verification["values"]}
    report.seconds["total"] = time.perf_counter() - t0
    return result


def write_program(program: Program, text_path: Path, weights_path: Path) -> list[Path]:
    """The minimized weights as `weights_path` (tensor by tensor) and the program text as `text_path`,
    paired as `Program.save` pairs them (`sr_ir.ir.persist`), so `sr_ir.load(text_path)` reads them back
    (with `weights_path` named `<text stem>.safetensors`)."""
    from ..ir.persist import ALIASES_KEY, PAIR_KEY, pair_id
    from ..outputs import atomic_write, folder_lock

    missing = [n for n in program.params if n not in program.weights]
    if missing:
        raise SrIrError(f"cannot save: no weights for {', '.join('@' + m for m in missing[:5])}")
    text = program.to_text()
    pair = pair_id(text)
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    first: dict[int, str] = {}
    for n in program.params:
        t = program.weights[n]
        if id(t) in first:  # one tensor under two names (tied embeddings): stored once
            aliases[n] = first[id(t)]
            continue
        first[id(t)] = n
        stored[n] = t
    metadata = {PAIR_KEY: pair, **({ALIASES_KEY: json.dumps(aliases, sort_keys=True)} if aliases else {})}
    text_path.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(text_path.parent):
        write_safetensors(weights_path, stored, metadata)
        atomic_write(text_path, f"# sr-ir pair {pair}\n{text}")
    return [weights_path, text_path]


def read_back(text_path: Path, weights_path: Path, rules: Any) -> Program:
    """The program saved by `write_program`, read back from its files: the text parsed and checked, the
    weights `Deferred` tensors over the safetensors file (nothing read yet; tied names resolved)."""
    from ..ir.checker import check_program
    from ..ir.parser import parse
    from ..ir.persist import ALIASES_KEY

    p = parse(text_path.read_text(), str(text_path), check=False)
    check_program(p, rules)
    small = SafetensorsFile(weights_path)
    aliases = json.loads(small.metadata.get(ALIASES_KEY, "{}"))
    stored = small.deferred_all()
    missing = [n for n in p.params if aliases.get(n, n) not in stored]
    if missing:
        raise SrIrError(f"{weights_path} has no tensor for {', '.join('@' + m for m in missing[:3])} of {text_path}")
    p.weights = {n: stored[aliases.get(n, n)] for n in p.params}
    return p


def compare_streaming(original: Program, minimized: Program, inputs: list[list[Any]], rules: Any,
                      tolerance: dict[torch.dtype, float] | None = None,
                      dtype: torch.dtype = torch.float64) -> dict[str, Any]:
    """Run both programs node by node (weights read per node) in `dtype` on each input list and compare
    every value they both hold with the same type, in program order; VerificationError at the first
    value beyond the tolerance. The worst relative error, how many values were compared."""
    from ..backend.interpret import run_program
    from ..ir.types import DTYPE_NAMES
    from .verify import retyped

    tol = {**TOLERANCE, **(tolerance or {})}[dtype]
    name = DTYPE_NAMES[dtype] if dtype in DTYPE_NAMES else "f64"
    a, b = retyped(original, name), retyped(minimized, name)
    types_a = a.value_types()
    types_b = b.value_types()
    shared = [n.name for n in b.nodes if n.name in types_a and types_a[n.name] == types_b[n.name]]
    for o in original.outputs:
        if o not in shared:
            shared.append(o)
    worst = {"max_abs": 0.0, "max_rel": 0.0, "value": None}
    for x in inputs:
        xs = cast_inputs(x, dtype)
        ya = run_program(_with_outputs(a, shared), xs, rules=rules, weight=_reader(a))
        yb = run_program(_with_outputs(b, shared), xs, rules=rules, weight=_reader(b))
        for v, p, q in zip(shared, ya, yb):
            d = difference([p], [q])
            if not d.within(tol):
                raise VerificationError(f"value %{v} differs after streaming minimization: relative error "
                                        f"{d.max_rel:.3g} at {d.position} (tolerance {tol:g}); nothing was kept")
            if d.max_rel >= worst["max_rel"]:
                worst = {"max_abs": d.max_abs, "max_rel": d.max_rel, "value": v}
        del ya, yb
    return {**worst, "dtype": str(dtype).replace("torch.", ""), "values": len(shared) * len(inputs)}


def _with_outputs(p: Program, names: list[str]) -> Program:
    q = p.copy(weights=False)
    q.weights = p.weights
    types = q.value_types()
    q.outputs = list(names)
    q.output_types = [types[n] for n in names]
    return q


def _reader(p: Program) -> Callable[[str], torch.Tensor]:
    def read(name: str) -> torch.Tensor:
        return materialize(p.weights[name])

    return read


__all__ = ["StreamedMinimized", "attach_checkpoint", "build_on_meta", "compare_streaming", "deferred_weights",
           "minimize_checkpoint", "parameters_on_meta", "read_back", "write_program"]
