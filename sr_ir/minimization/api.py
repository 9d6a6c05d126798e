"""`sr_ir.minimize`: a masked network in, a smaller network with the same function out, checked."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.export import ExportedProgram

from ..errors import SrIrError
from ..ir.checker import check_program
from ..ir.program import Program
from ..lang.loader import RuleSet, default_rules, load_rules
from .analysis import analyze
from .batchnorm import fold_batch_norms
from .report import MinimizeReport, removal_rows
from .rewrite import apply, plan
from .rulebook import RuleBook
from .transformer import TransformerReport, reduce_transformer
from .verify import compare

RulesArg = RuleSet | str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None


@dataclass
class Minimized:
    """The result of `minimize`: the smaller module, its program, and what happened."""

    module: nn.Module
    program: Program
    report: MinimizeReport
    original: Program = field(repr=False)


def resolve_rules(rules: RulesArg) -> RuleSet:
    """None: the bundled rules; a RuleSet as is; a directory/file (or several): bundled rules plus those."""
    if rules is None:
        return default_rules()
    if isinstance(rules, RuleSet):
        return rules
    paths = [rules] if isinstance(rules, (str, os.PathLike)) else list(rules)
    return load_rules(extra=[Path(p) for p in paths])


def minimize_program(program: Program, rules: RulesArg = None, *, max_iterations: int = 100,
                     progress: bool = False, strict: bool = False, book: RuleBook | None = None) -> tuple[Program, MinimizeReport]:
    """Minimize a Program (no emission, no verification). Iterates analysis and rewrite to a fixpoint,
    so removals cascade: a folded constant can make the next layer's row dead, and so on."""
    rs = resolve_rules(rules)
    book = book or RuleBook(rs, strict=strict)
    report = MinimizeReport.start(program)
    t0 = time.perf_counter()
    p, bn = fold_batch_norms(program, rs, book)
    report.batch_norms_folded = bn
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="minimize", unit="pass", leave=False)
    transformer = TransformerReport()
    for it in range(max_iterations):
        # heads, qk/v dims, gated units, residual stream through compensated norms (transformer.py)
        p, tr = reduce_transformer(p, book)
        transformer.add(tr)
        a = analyze(p, rs, book)
        removals = plan(a)
        if not removals:
            if tr.any():
                check_program(p, rs)
                report.passes = it + 1
                continue
            break
        p, rem = apply(a, rs, removals)
        check_program(p, rs)
        report.record(it + 1, rem)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(params=f"{p.param_count():,}")
    else:
        raise SrIrError(f"minimization did not reach a fixpoint in {max_iterations} passes")
    if bar is not None:
        bar.close()
    p = p.drop_dead()
    report.transformer = transformer.to_dict()
    report.finish(p, time.perf_counter() - t0, sorted(book.used))
    report.refused_rules = dict(sorted(book.refused.items()))
    return p, report


def minimize(
    model: nn.Module | ExportedProgram | Program,
    example_inputs: Sequence[Any] = (),
    *,
    rules: RulesArg = None,
    verify: bool = True,
    n_random: int = 3,
    progress: bool = False,
    tolerance: dict[torch.dtype, float] | None = None,
    strict: bool = False,
) -> Minimized:
    """Minimize a masked network exactly.

    `model` is an nn.Module (masks from torch.nn.utils.prune and parametrizations are applied when it
    is lowered), a torch.export program, or an sr-ir Program. `rules` adds rule directories to the
    bundled ones (or replaces them with a RuleSet). With `verify`, the result is compared with the
    original on `example_inputs` and `n_random` random inputs in float32 and float64, and a difference
    beyond rounding raises VerificationError saying where it appeared.

    Only rules with a current certificate are applied. A node whose rule has none is left as is and
    the rule is listed in `report.refused_rules` with the reason; with `strict`, UncertifiedRuleError
    names it instead.
    """
    from ..backend import emit
    from ..frontend import lower

    rs = resolve_rules(rules)
    t0 = time.perf_counter()
    if isinstance(model, Program):
        original = model
    else:
        if not example_inputs and not isinstance(model, ExportedProgram):
            raise SrIrError("minimize needs example inputs for an nn.Module")
        original = lower(model, example_inputs, rules=rs)
    t_lower = time.perf_counter() - t0
    program, report = minimize_program(original, rs, progress=progress, strict=strict)
    module = emit(program, rs)
    report.seconds["lower"] = t_lower
    report.buffers_after = _buffer_bytes(program)
    if verify:
        t1 = time.perf_counter()
        reference = model if isinstance(model, nn.Module) else model.module() if isinstance(model, ExportedProgram) else emit(original, rs)
        inputs = list(example_inputs) if example_inputs else _sample(original)
        report.verification = compare(reference, module, inputs, n_random=n_random, tolerance=tolerance).to_dict()
        report.seconds["verify"] = time.perf_counter() - t1
    report.seconds["total"] = time.perf_counter() - t0
    return Minimized(module, program, report, original)


def _sample(p: Program) -> list[torch.Tensor]:
    from ..cli.inputs import sample_inputs

    return list(sample_inputs(p, batch=2))


def _buffer_bytes(p: Program) -> int:
    return sum(p.weights[b].numel() * p.weights[b].element_size() for b in p.buffers if b in p.weights)


__all__ = ["Minimized", "minimize", "minimize_program", "removal_rows", "resolve_rules"]
