"""Reading the models the CLI accepts: `.pt2` (torch.export.save), `.sr` (IR text + safetensors), or a
`package.module:factory` import path with optional safetensors weights; and `writing`, which reports an
output that cannot be written as one line naming it."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..errors import SrIrError, describe
from ..outputs import TEMP_PREFIX

if TYPE_CHECKING:  # torch and the library are imported by the functions that use them, not with the
    # module: the commands' parsers are built from it (`sr-ir COMMAND --help` imports no torch)
    import torch
    from torch import nn

    from ..ir.program import Program
    from ..lang.loader import RuleSet

# The spellings of --input-dtype: those of sr_ir.ir.types.DTYPES (which imports torch), sorted;
# tests/cli/test_startup.py keeps the two equal.
INPUT_DTYPES = ("bf16", "bool", "f16", "f32", "f64", "i16", "i32", "i64", "i8", "u8")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .pt2 file, a .sr file, or package.module:factory")
    p.add_argument("--weights", metavar="FILE", help="safetensors state dict for a module:factory model")
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="DIMS",
        help="example input shape for a module:factory model, e.g. 4x784 (repeat for several inputs); "
        "default: the module's example_inputs() function",
    )
    p.add_argument("--input-dtype", default="f32", choices=INPUT_DTYPES, help="dtype of --input-shape inputs")
    p.add_argument("--rules", action="append", default=[], metavar="DIR", help="extra rule directory (repeatable)")


def load_factory(spec: str, weights: str | None = None) -> tuple[nn.Module, Any]:
    """Import `package.module:factory`, call it, load safetensors weights; returns (model, module)."""
    from torch import nn

    if ":" not in spec:
        raise SrIrError(f"{spec!r}: expected a .pt2 or .sr file, or package.module:factory")
    mod_name, _, fn_name = spec.partition(":")
    _import_from_current_folder()
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise SrIrError(f"cannot import {mod_name!r}: {e}") from None
    except Exception as e:  # the user's module fails while it is imported
        raise SrIrError(f"importing {mod_name!r} failed: {describe(e)}") from None
    fn = getattr(mod, fn_name, None)
    if fn is None or not callable(fn):
        raise SrIrError(f"{mod_name!r} has no callable {fn_name!r}")
    try:
        model = fn()
    except Exception as e:
        raise SrIrError(f"calling {spec} failed: {describe(e)}") from None
    if not isinstance(model, nn.Module):
        raise SrIrError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    if weights:
        _load_weights(model, weights, spec)
    return model.eval(), mod


def _import_from_current_folder() -> None:
    """Let `sr-ir CMD mymodel:factory` find mymodel.py in the current folder, as `python -m` does (the
    `sr-ir` script's own folder is what Python put first on sys.path instead)."""
    here = os.getcwd()
    if not any(os.path.abspath(p or ".") == here for p in sys.path):
        sys.path.insert(0, here)


def _load_weights(model: nn.Module, weights: str, spec: str) -> None:
    from safetensors.torch import load_file

    if not Path(weights).is_file():
        raise SrIrError(f"no such weights file: {weights}")
    try:
        state = load_file(weights)
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise SrIrError(f"{weights}: not a readable safetensors file ({e})") from None
    own = model.state_dict()
    wrong = [f"{k} is {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        raise SrIrError(f"{weights} does not match {spec}: {'; '.join(wrong[:3])}"
                        + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SrIrError(f"{weights} does not match {spec}: missing {missing[:3]}, unexpected {unexpected[:3]}")


def factory_model_and_inputs(args: argparse.Namespace) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The `package.module:factory` model with its weights and example inputs, run once on them so that
    a forward that fails on them (a wrong --input-shape, a bug in the model) is one line naming both."""
    import torch

    model, mod = load_factory(args.model, args.weights)
    inputs = example_inputs_for(args, mod)
    try:
        with torch.no_grad():
            model(*inputs)
    except Exception as e:
        shapes = ", ".join("x".join(map(str, x.shape)) for x in inputs if isinstance(x, torch.Tensor))
        raise SrIrError(f"{args.model}: the model's forward fails on example inputs of shape {shapes} "
                        f"({describe(e)})") from None
    return model, inputs


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Report an output the file system refuses (a read-only folder, a full disk) as an SrIrError naming
    `path`, instead of the temporary file the atomic write was creating beside it."""
    try:
        yield
    except OSError as e:
        if e.strerror is None:
            raise
        target = _target_of_temporary(e.filename) if e.filename is not None else None
        if target is not None and target.parent == Path(path).parent:
            path = target  # one write of several (a .py's weights beside it): name the file that failed
        # name what refused when it is not the temporary file beside `path` (a file where a folder should be)
        other = target is None and e.filename is not None and Path(e.filename).parent != Path(path).parent
        raise SrIrError(f"cannot write {path}: {e.strerror}" + (f" ({e.filename})" if other else "")) from None


def _target_of_temporary(filename: Any) -> Path | None:
    """The file an atomic write's temporary (``.sr-ir-tmp.<pid>.<hex>.<name>``, or a file inside such a
    folder; a program save's ``.sr-ir-next.<id>.<name>`` text) was to become; None for any other path."""
    from ..ir.persist import NEXT_PREFIX  # a write failed: the command that wrote has imported the library

    p = Path(os.fsdecode(filename))
    for q in (p, *p.parents):
        if q.name.startswith(TEMP_PREFIX):
            parts = q.name[len(TEMP_PREFIX):].split(".", 2)
            if len(parts) != 3:
                return None
            name = parts[2]
            if name.startswith(NEXT_PREFIX):
                name = name[len(NEXT_PREFIX):].partition(".")[2]
            return q.parent / name if name else None
    return None


def example_inputs_for(args: argparse.Namespace, mod: Any) -> tuple[torch.Tensor, ...]:
    import torch

    from ..ir.types import DTYPES

    if args.input_shape:
        dtype = DTYPES[args.input_dtype]
        out = []
        for s in args.input_shape:
            try:
                shape = [int(d) for d in s.lower().split("x")]
            except ValueError:
                shape = []
            if not shape or min(shape) < 1:
                raise SrIrError(f"--input-shape {s!r}: expected positive dims like 4x784")
            try:
                out.append(torch.randn(shape, dtype=dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype))
            except (RuntimeError, MemoryError) as e:  # too large to allocate: the shape is wrong, not sr-ir
                raise SrIrError(f"--input-shape {s!r}: cannot make an input of that shape ({describe(e)})") from None
        return tuple(out)
    fn = getattr(mod, "example_inputs", None)
    if fn is None:
        raise SrIrError("give --input-shape (the model's module defines no example_inputs())")
    try:
        ex = fn()
    except Exception as e:
        raise SrIrError(f"{mod.__name__}.example_inputs() failed: {describe(e)}") from None
    return tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)


def rules_for(args: argparse.Namespace) -> RuleSet:
    """The bundled rules plus every ``--rules DIR`` (the same resolution as `sr_ir.minimize`'s ``rules``)."""
    from ..minimization.api import resolve_rules

    return resolve_rules([Path(r) for r in getattr(args, "rules", None) or []] or None)


def load_program(args: argparse.Namespace, rules: RuleSet | None = None) -> Program:
    """The model argument as a Program (lowered if needed), its ops checked against ``rules`` (default:
    `rules_for`), so that a `.sr` file using an op of a ``--rules`` directory reads back."""
    from ..frontend import load_exported, lower
    from ..ir.persist import load

    rules = rules if rules is not None else rules_for(args)
    spec = args.model
    path = Path(spec)
    if path.suffix == ".sr":
        return load(path, rules=rules)
    if path.suffix == ".pt2":
        return lower(load_exported(path), rules=rules, name=_stem_name(path))
    model, inputs = factory_model_and_inputs(args)
    return lower(model, inputs, rules=rules)


def _stem_name(path: Path) -> str:
    import re

    s = re.sub(r"[^a-z0-9_]", "_", path.stem.lower())
    return s if s and s[0].isalpha() else "model"


def parse_shapes(values: Sequence[str]) -> list[list[int]]:
    return [[int(d) for d in v.split("x")] for v in values]
