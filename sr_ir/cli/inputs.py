"""Reading the models the CLI accepts: `.pt2` (torch.export.save), `.sr` (IR text + safetensors), or a
`package.module:factory` import path with optional safetensors weights."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SrIrError
from ..ir.program import Program
from ..ir.types import DTYPES


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
    p.add_argument("--input-dtype", default="f32", choices=sorted(DTYPES), help="dtype of --input-shape inputs")
    p.add_argument("--rules", action="append", default=[], metavar="DIR", help="extra rule directory (repeatable)")


def load_factory(spec: str, weights: str | None = None) -> tuple[nn.Module, Any]:
    """Import `package.module:factory`, call it, load safetensors weights; returns (model, module)."""
    if ":" not in spec:
        raise SrIrError(f"{spec!r}: expected a .pt2 or .sr file, or package.module:factory")
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise SrIrError(f"cannot import {mod_name!r}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if fn is None or not callable(fn):
        raise SrIrError(f"{mod_name!r} has no callable {fn_name!r}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise SrIrError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    if weights:
        from safetensors.torch import load_file

        if not Path(weights).is_file():
            raise SrIrError(f"no such weights file: {weights}")
        try:
            state = load_file(weights)
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise SrIrError(f"{weights}: not a readable safetensors file ({e})") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SrIrError(f"{weights} does not match {spec}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model.eval(), mod


def example_inputs_for(args: argparse.Namespace, mod: Any) -> tuple[torch.Tensor, ...]:
    if args.input_shape:
        dtype = DTYPES[args.input_dtype]
        out = []
        for s in args.input_shape:
            try:
                shape = [int(d) for d in s.lower().split("x")]
            except ValueError:
                raise SrIrError(f"--input-shape {s!r}: expected dims like 4x784") from None
            out.append(torch.randn(shape, dtype=dtype) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype))
        return tuple(out)
    fn = getattr(mod, "example_inputs", None)
    if fn is None:
        raise SrIrError("give --input-shape (the model's module defines no example_inputs())")
    ex = fn()
    return tuple(ex) if isinstance(ex, (tuple, list)) else (ex,)


def rules_for(args: argparse.Namespace):
    from ..lang.loader import default_rules, load_rules

    if not getattr(args, "rules", None):
        return default_rules()
    return load_rules(extra=[Path(r) for r in args.rules])


def load_program(args: argparse.Namespace) -> Program:
    """The model argument as a Program (lowered if needed)."""
    from ..frontend import lower
    from ..ir.persist import load

    rules = rules_for(args)
    spec = args.model
    path = Path(spec)
    if path.suffix == ".sr":
        return load(path)
    if path.suffix == ".pt2":
        if not path.is_file():
            raise SrIrError(f"no such file: {path}")
        try:
            ep = torch.export.load(str(path))
        except Exception as e:  # a corrupt archive raises various errors
            raise SrIrError(f"{path}: cannot read the torch.export archive ({str(e).splitlines()[0]})") from None
        return lower(ep, rules=rules, name=_stem_name(path))
    model, mod = load_factory(spec, args.weights)
    return lower(model, example_inputs_for(args, mod), rules=rules)


def _stem_name(path: Path) -> str:
    import re

    s = re.sub(r"[^a-z0-9_]", "_", path.stem.lower())
    return s if s and s[0].isalpha() else "model"


def parse_shapes(values: Sequence[str]) -> list[list[int]]:
    return [[int(d) for d in v.split("x")] for v in values]
