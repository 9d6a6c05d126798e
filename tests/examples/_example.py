"""Shared by the tests of examples/<dir>/: where an example lives and how to import its model.py."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_dir(name: str) -> Path:
    return EXAMPLES / name


def load_model_module(name: str) -> ModuleType:
    """examples/<name>/model.py as a module of its own (no __pycache__ written into examples/)."""
    path = EXAMPLES / name / "model.py"
    spec = importlib.util.spec_from_file_location(f"sr_ir_example_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    old, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.dont_write_bytecode = old
    return mod


def param_count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())
