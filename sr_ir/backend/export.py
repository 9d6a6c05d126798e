"""Writing an emitted module to the formats users load elsewhere, chosen by the file's suffix.

- ``.pt2``: a torch.export archive; the batch axis stays dynamic where the program's is.
- ``.onnx``: torch's dynamo ONNX exporter (needs ``sr-ir[onnx]``: onnx, onnxscript, onnxruntime); the file
  is run in onnxruntime at two batch sizes and compared with the module before it replaces the target.
- ``.sr``: the IR text, with its weights in ``<stem>.safetensors`` (`sr_ir.ir.persist`).
- ``.py``: standalone Python source (torch and safetensors only: no sr_ir import) with its weights in
  ``<stem>.safetensors``; the file's ``load()`` builds the module with them.

Every file is written atomically with the user's umask (`sr_ir.outputs`). The library writes here and
the CLI calls it, so that ``Minimized.save`` and ``sr-ir minimize -o`` write the same files.
"""
from __future__ import annotations

import ast
import json
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..comparison import difference, flat_outputs
from ..errors import SrIrError, VerificationError, describe
from ..ir.persist import (ALIASES_KEY, PAIR_KEY, PYTHON_KEY, check_save_path, distinct_tensors,
                          refuse_foreign_weights, weights_path)
from ..ir.program import Program
from ..ir.sampling import sample_inputs
from ..outputs import atomic_save_with, atomic_write, check_target
from .torch_module import emit_source

SUFFIXES = (".pt2", ".onnx", ".sr", ".py")
# onnxruntime against the module: float32 rounding through a differently ordered graph, or float64's
ONNX_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}


def check_output(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path when a model can be written there (a known suffix, no folder in the way of it
    or of its weights file); a one-line SrIrError otherwise. Cheap: call it before the work."""
    p = Path(path)
    if p.suffix not in SUFFIXES:
        raise SrIrError(f"{p}: cannot tell what to write from the suffix {p.suffix or '(none)'!r}; "
                        f"use one of {', '.join(SUFFIXES)}")
    if p.suffix in (".sr", ".py"):
        return check_save_path(p)
    return check_target(p)


def save_module(module: nn.Module, program: Program, path: str | os.PathLike[str], *,
                example_inputs: Sequence[Any] | None = None) -> list[Path]:
    """Write ``module`` (emitted from ``program``) as ``path``, the format chosen by its suffix; the
    files written (a ``.sr`` or ``.py`` also writes its ``.safetensors``).

    ``example_inputs`` are those ``.onnx`` is traced and checked on (default: random inputs of the
    program's types at batch 2); the other formats do not need them.

    >>> save_module(result.module, result.program, "small.pt2")  # doctest: +SKIP
    [PosixPath('small.pt2')]
    """
    p = check_output(path)
    if p.suffix == ".sr":
        _with_current_weights(module, program).save(str(p))  # (refuses a .safetensors that holds a .py's weights)
        return [p, weights_path(p)]
    if p.suffix == ".py":
        return save_python(module, p)
    if p.suffix == ".pt2":
        save_pt2(module, program, p)
        return [p]
    save_onnx(module, program, p, example_inputs)
    return [p]


def _with_current_weights(module: nn.Module, program: Program) -> Program:
    """``program`` with ``module``'s weights as they are now (fine-tuned since `minimize`, say), so that a
    ``.sr`` holds what the other formats hold. A module whose parameters no longer have the program's
    shapes or dtypes (``.double()``) does not compute that program: a one-line SrIrError."""
    state = module.state_dict()
    if set(state) != set(program.params):
        return program  # state-dict keys that are not the program's names: its weights are the emitted ones
    changed = [n for n, t in program.params.items()
               if tuple(state[n].shape) != tuple(t.shape) or state[n].dtype != t.torch_dtype]
    if changed:
        w = state[changed[0]]
        raise SrIrError(f"the module's {changed[0]} is {tuple(w.shape)} {w.dtype}, the program's "
                        f"{program.params[changed[0]]}: a module converted since it was emitted cannot be saved as "
                        f".sr (save .pt2, .onnx or .py)")
    prog = program.copy(weights=False)
    prog.weights = {n: state[n].detach().cpu() for n in program.params}
    return prog


def _inputs_for(module: nn.Module, program: Program, batch: int) -> tuple[torch.Tensor, ...]:
    """Random inputs of the program's types at ``batch``, in the module's float dtype and on its device
    (a module moved to float64 or a GPU after emission is exported as it is now)."""
    first = next((t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()), None)
    xs = sample_inputs(program, batch=batch, dtype=first.dtype if first is not None else None)
    return tuple(x.to(first.device) for x in xs) if first is not None else xs


def _dynamic_batch(program: Program) -> list[bool]:
    """Per input: whether its leading axis is the symbolic batch."""
    return [bool(t.rank) and not isinstance(t.shape[0], int) for _, t in program.inputs]


def save_pt2(module: nn.Module, program: Program, path: str | os.PathLike[str]) -> None:
    """Save ``module`` with torch.export, the batch axis dynamic where the program's is, atomically."""
    from torch.export import Dim

    inputs = _inputs_for(module, program, 2)
    dynamic = tuple({0: Dim.AUTO} if d else None for d in _dynamic_batch(program))
    try:
        ep = torch.export.export(module.eval(), inputs, dynamic_shapes=dynamic, strict=False)
    except Exception as e:  # torch.export's errors run to pages; its first line names what failed
        raise SrIrError(f"{path}: torch.export of the module failed ({describe(e)})") from None
    atomic_save_with(path, lambda tmp: torch.export.save(ep, tmp))


def save_onnx(module: nn.Module, program: Program, path: str | os.PathLike[str],
              example_inputs: Sequence[Any] | None = None) -> None:
    """Export ``module`` to ONNX (dynamo exporter, batch axis dynamic where the program's is), run the
    file in onnxruntime at batch 2 and 3 (or on ``example_inputs`` and batch 3) and compare it with the
    module; VerificationError, nothing written, when they differ beyond rounding."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so here rather than deep inside torch)
        import onnxruntime as ort
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SrIrError(f"writing .onnx needs onnx, onnxscript and onnxruntime (pip install 'sr-ir[onnx]'): "
                        f"{e}") from None
    from torch.export import Dim

    module = module.eval()
    xs = tuple(example_inputs) if example_inputs else _inputs_for(module, program, 2)
    names = [_onnx_name(n, i) for i, (n, _) in enumerate(program.inputs)]
    dynamic = _dynamic_batch(program)
    # a second batch size shows that the file's batch axis really is dynamic
    checks = [xs] + ([_inputs_for(module, program, 3)] if any(dynamic) else [])
    first = next((t for t in module.parameters() if t.is_floating_point()), None)
    tol = ONNX_TOLERANCE.get(first.dtype if first is not None else torch.float32, 1e-4)

    def writer(tmp: str) -> None:
        try:
            with warnings.catch_warnings():
                # torch's own deprecations inside the exporter (pytree internals): nothing the user can act on
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                onnx_program = torch.onnx.export(
                    module, xs, input_names=names, output_names=[f"out{i}" for i in range(len(program.outputs))],
                    dynamic_shapes=tuple({0: Dim.AUTO} if d else None for d in dynamic), dynamo=True,
                    verbose=False, report=False)
        except Exception as e:
            raise SrIrError(f"{path}: ONNX export failed ({describe(e)})") from None
        onnx_program.save(tmp, external_data=False)  # one file: the atomic rename moves only it
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        feed_names = [i.name for i in session.get_inputs()]
        for inputs in checks:
            got = session.run(None, {n: x.detach().cpu().numpy() for n, x in zip(feed_names, inputs)})
            with torch.no_grad():
                want = module(*inputs)
            d = difference(flat_outputs(want), [torch.from_numpy(g) for g in got])
            if not d.within(tol):
                batch = inputs[0].shape[0] if inputs and inputs[0].dim() else "?"
                raise VerificationError(f"{path}: onnxruntime output {d.worst_output} differs from the module by "
                                        f"{d.max_rel:.3g} (relative) at batch {batch}; not written")

    atomic_save_with(path, writer)


def _onnx_name(name: str, i: int) -> str:
    """An ONNX graph input name for the program input ``name`` (its own when it is a plain identifier)."""
    return name if name.isidentifier() else f"input{i}"


LOADER = '''

def load(weights=None, map_location="cpu"):
    """The model with its weights: `weights` is a .safetensors file (default: {weights!r} beside this
    file). Needs only torch and safetensors."""
    import json
    import os

    from safetensors import safe_open

    if weights is None:
        weights = os.path.join(os.path.dirname(os.path.abspath(__file__)), {weights!r})
    with safe_open(weights, framework="pt", device=str(map_location)) as f:
        state = {{k: f.get_tensor(k) for k in f.keys()}}
        # tensors the model ties (one embedding read twice) are stored once: name them all again
        aliases = json.loads((f.metadata() or {{}}).get({aliases_key!r}, "{{}}"))
    state.update({{name: state[stored] for name, stored in aliases.items()}})
    model = {cls}()
    model.load_state_dict(state, strict=True)
    return model.eval()
'''


def save_python(module: nn.Module, path: str | os.PathLike[str]) -> list[Path]:
    """Write ``module``'s generated source as ``path`` with a ``load()`` function and its state dict as
    ``<stem>.safetensors``; the files written. The source imports torch (and safetensors in ``load``)
    only, so ``python -c "import small; m = small.load()"`` works where sr-ir is not installed.

    The weights go first: a reader that sees the new source also finds its weights."""
    p = check_save_path(path)
    program = getattr(module, "sr_ir_program", None)
    if program is None:
        raise SrIrError(f"{p}: the module was not emitted by sr-ir (it has no generated source to write)")
    cls = type(module).__name__
    # the module's own source may build sr_ir.nn layers (frozen batch norms, compensated norms); the file
    # must stand alone, so it is emitted again in torch-only form (same state_dict keys)
    source = emit_source(program, getattr(module, "sr_ir_rules", None), cls, standalone=True)
    if cls not in _top_level_classes(source):
        raise SrIrError(f"{p}: the generated source defines no class {cls!r}")
    if "load" in _top_level_names(source):
        raise SrIrError(f"{p}: the generated source already defines a top-level 'load'")
    wp = weights_path(p)
    refuse_foreign_weights(p, owner_key=PAIR_KEY, owner_suffix=".sr")
    tensors, aliases = distinct_tensors(dict(module.state_dict()))
    metadata = {PYTHON_KEY: p.name, **({ALIASES_KEY: json.dumps(aliases, sort_keys=True)} if aliases else {})}
    from safetensors.torch import save_file

    atomic_save_with(wp, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    text = source.rstrip("\n") + "\n" + LOADER.format(weights=wp.name, aliases_key=ALIASES_KEY, cls=cls)
    atomic_write(p, text)
    return [p, wp]


def _top_level_classes(source: str) -> set[str]:
    return {n.name for n in ast.parse(source).body if isinstance(n, ast.ClassDef)}


def _top_level_names(source: str) -> set[str]:
    out: set[str] = set()
    for n in ast.parse(source).body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.Assign):
            out.update(t.id for t in n.targets if isinstance(t, ast.Name))
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in n.names)
    return out


__all__ = ["ONNX_TOLERANCE", "PYTHON_KEY", "SUFFIXES", "check_output", "save_module", "save_onnx",
           "save_pt2", "save_python"]
