"""`sr_ir.minimize`: a masked network in, a smaller network with the same function out, checked."""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from torch.export import ExportedProgram

from ..errors import SrIrError
from ..ir.checker import check_program
from ..ir.program import Node, ParamRef, Program, ValueRef, fresh_name
from ..ir.sampling import sample_inputs
from ..ir.types import TensorType
from ..lang.loader import RuleSet, default_rules, load_rules
from .applying import apply_plan
from .facts import propagate
from ..rewrite.matching import Graph
from .planning import build_sites, kept_zero_channels, plan
from .report import MinimizeReport, removal_rows
from ..rewrite.rulebook import RuleBook
from ..rewrite.substitution import substitute
from ..lang.functions import function_table
from .verify import N_RANDOM, same_function

RulesArg = RuleSet | str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None


@dataclass(repr=False)
class Minimized:
    """The result of `minimize`: the smaller module, its program, and what happened.

    >>> import torch, sr_ir
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> with torch.no_grad():  # unit 1 is relu(0 * x - 1) = 0: dead
    ...     _ = net[0].weight[1].zero_(), net[0].bias[1].fill_(-1.0)
    >>> result = sr_ir.minimize(net, (torch.randn(2, 4),))
    >>> result
    Minimized(params 23 -> 16 (1.4x), verified float64 rel err ...)
    >>> print(result.report)  # the before/after table  # doctest: +SKIP
    >>> result.save("small.pt2")  # or .onnx, .sr, .py  # doctest: +SKIP
    """

    module: nn.Module
    program: Program
    report: MinimizeReport
    original: Program

    def __repr__(self) -> str:
        r = self.report
        ratio = f"{r.ratio:.1f}x" if r.params_after else "all removed"
        worst = r.verification.get("float64") or r.verification.get("float32")
        if worst is None:
            checked = "not verified"
        else:
            dt = "float64" if "float64" in r.verification else "float32"
            checked = f"verified {dt} rel err {worst['max_rel']:.2g}"
        return f"Minimized(params {r.params_before:,} -> {r.params_after:,} ({ratio}), {checked})"

    @property
    def name_map(self) -> dict[str, str | None]:
        """Each `state_dict()` key of `module` -> the original model's key it came from (None for a
        tensor a rewrite made, such as a folded batch norm's bias). ``report.names`` says how.

        >>> result.name_map["h.0.attn.c_attn.weight_t"]  # doctest: +SKIP
        'h.0.attn.c_attn.weight'
        """
        keys = getattr(self.module, "sr_ir_names", {n: n for n in self.program.params})
        return {keys.get(n, n): e["original"] for n, e in self.report.names.items()}

    def save(self, path: str | os.PathLike[str], *, example_inputs: Sequence[Any] | None = None) -> list[Path]:
        """Write the minimized model as ``path``, the format chosen by its suffix; the files written.

        ``.pt2`` (torch.export, dynamic batch), ``.onnx`` (checked in onnxruntime; needs ``sr-ir[onnx]``),
        ``.sr`` (IR text + ``<stem>.safetensors``; read back with `sr_ir.load`, giving the same ``rules``
        when it uses a user's op) or ``.py`` (standalone source + ``<stem>.safetensors``; its ``load()``
        needs torch and safetensors only). ``example_inputs`` are what ``.onnx`` is traced and checked on
        (default: random inputs of the program's types). Another suffix is a one-line SrIrError. Every
        format holds ``self.module``'s weights as they are now (fine-tuned since `minimize`, say).

        >>> result.save("small.py")  # doctest: +SKIP
        [PosixPath('small.py'), PosixPath('small.safetensors')]
        >>> import small; model = small.load()  # doctest: +SKIP
        """
        from ..backend.export import save_module

        return save_module(self.module, self.program, path, example_inputs=example_inputs)


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
    """Minimize a Program (no emission, no verification). Iterates facts, planning and rewriting to a
    fixpoint, so removals cascade: a folded constant can make the next layer's row dead, and so on.

    Runs on one intra-op thread (torch.set_num_threads, restored on return): see `one_thread`."""
    with one_thread():
        return _minimize_program(program, rules, max_iterations=max_iterations, progress=progress,
                                 strict=strict, book=book)


@contextlib.contextmanager
def one_thread():
    """torch's intra-op threads set to one for the block, then restored.

    The analysis is thousands of small tensor operations. With more threads each of them ends at a
    barrier that waits for every thread, and where a core is busy with another process (a training job,
    a parallel test run) the thread scheduled there waits for its time slice at every barrier:
    ConvNeXt-Tiny's minimize took 9.4 s with 2 threads beside one other busy process, 1.2 s on one
    (benchmarks/RESULTS.md). On an idle machine a second thread saves some wall time and costs more CPU
    time than it saves. The setting is process-wide: a thread computing with torch concurrently runs on
    one thread meanwhile."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _minimize_program(program: Program, rules: RulesArg, *, max_iterations: int, progress: bool, strict: bool,
                      book: RuleBook | None) -> tuple[Program, MinimizeReport]:
    rs = resolve_rules(rules)
    book = book or RuleBook(rs, strict=strict)
    functions = function_table(rs)
    report = MinimizeReport.start(program)
    t0 = time.perf_counter()
    p = gathered = with_input_gathers(_shallow(program), rs)
    p, replaced = substitute(p, book, functions)
    substituted = p
    report.batch_norms_folded = replaced
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="minimize", unit="pass", leave=False)
    memo: dict = {}  # slice tests of the weights, kept over the passes (see _live_memo)
    for it in range(max_iterations):
        g = Graph.of(p, rs.ops)
        g.memo = _live_memo(memo, p)
        propagate(g, book, functions)
        pl = plan(g, build_sites(g, book, functions))
        if not pl.any():
            report.kept_zero = kept_zero_channels(pl)
            break
        p, rem = apply_plan(pl, book, functions)
        p = p.drop_dead()  # a node whose reader stopped reading it (an attention head nobody reads) goes
        check_program(p, rs)
        report.record(it + 1, rem)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(params=f"{p.param_count():,}")
    else:
        raise SrIrError(f"minimization did not reach a fixpoint in {max_iterations} passes")
    if bar is not None:
        bar.close()
    p = _without_identity_gathers(p).drop_dead()
    report.finish(p, time.perf_counter() - t0, sorted(book.used), before=program,
                  substituted=substituted, gathers=gathered)
    # a rule the engine cannot run at all (proved or not) is refused too, so that its author hears of it
    refused = {**{n: f"not runnable: {why}" for n, why in book.uncompiled.items()}, **book.refused}
    report.refused_rules = dict(sorted(refused.items()))
    return p, report


def _live_memo(memo: dict, p: Program) -> dict:
    """`memo` (LaneEval's slice tests: key -> (tensor, answer)) without the entries of tensors `p` no
    longer holds. A weight a pass left alone is the same tensor in the next pass, and its zero rows and
    columns are not tested again; a replaced weight's entry goes, so that the memo does not keep the
    tensor alive."""
    live = {id(t) for t in p.weights.values()}
    for k in [k for k, (t, _) in memo.items() if id(t) not in live]:
        del memo[k]
    return memo


def _shallow(p: Program) -> Program:
    """A copy of the graph sharing the weight tensors (rewrites replace tensors, never write into them)."""
    q = p.copy(weights=False)
    q.weights = dict(p.weights)
    return q


def with_input_gathers(p: Program, rs: RuleSet) -> Program:
    """Every static feature axis of a float network input read through an identity `gather`, so that
    features nobody reads can be dropped like any channel while the model keeps its interface."""
    if "gather" not in rs.ops:
        return p
    pre: list[Node] = []
    alias: dict[str, str] = {}
    taken = {n.name for n in p.nodes} | {n for n, _ in p.inputs}
    for name, ty in p.inputs:
        if not ty.dtype.startswith(("f", "b")) or ty.rank < 2:
            continue
        cur, shape = name, list(ty.shape)
        axes = [a for a in range(1, ty.rank) if isinstance(ty.shape[a], int)]
        for a in axes:
            base = f"{name}_kept" if len(axes) == 1 else f"{name}_kept_{a}"
            pname = fresh_name(base, p.params)
            vname = fresh_name(base, taken)
            taken.add(vname)
            p.weights[pname] = torch.arange(int(ty.shape[a]), dtype=torch.int64)
            p.params[pname] = TensorType.of(p.weights[pname])
            p.buffers.add(pname)
            pre.append(Node(vname, "gather", [ValueRef(cur), ParamRef(pname)], {"dim": a}, TensorType(ty.dtype, tuple(shape))))
            cur = vname
        if cur != name:
            alias[name] = cur
    if not pre:
        return p
    for n in p.nodes:
        n.operands = [ValueRef(alias[o.name]) if isinstance(o, ValueRef) and o.name in alias else o for o in n.operands]
    p.outputs = [alias.get(o, o) for o in p.outputs]
    p.nodes = pre + p.nodes
    return p


def _without_identity_gathers(p: Program) -> Program:
    """Input gathers that kept every feature are no-ops: read the input directly again."""
    inputs = {n for n, _ in p.inputs}
    alias: dict[str, str] = {}
    drop: set[str] = set()
    for n in p.nodes:
        if n.op != "gather" or not isinstance(n.operands[0], ValueRef) or not isinstance(n.operands[1], ParamRef):
            continue
        src = alias.get(n.operands[0].name, n.operands[0].name)
        if src not in inputs and n.operands[0].name not in alias:
            continue
        idx = p.weights[n.operands[1].name]
        src_type = dict(p.inputs).get(n.operands[0].name) or p.value_types()[n.operands[0].name]
        full = int(src_type.shape[n.attrs["dim"]]) if isinstance(src_type.shape[n.attrs["dim"]], int) else -1
        if idx.numel() == full and torch.equal(idx, torch.arange(full)):
            alias[n.name] = src
            drop.add(n.name)
    if not drop:
        return p
    p.nodes = [n for n in p.nodes if n.name not in drop]
    p.replace_uses(alias)
    p.drop_unused_params()
    return p


def minimize(
    model: nn.Module | ExportedProgram | Program,
    example_inputs: Sequence[Any] = (),
    *,
    rules: RulesArg = None,
    verify: bool = True,
    n_random: int = N_RANDOM,
    progress: bool = False,
    tolerance: dict[torch.dtype, float] | None = None,
    strict: bool = False,
) -> Minimized:
    """Minimize a masked network exactly.

    `model` is an nn.Module (masks from torch.nn.utils.prune and parametrizations are applied when it
    is lowered), a torch.export program, or an sr-ir Program. `rules` adds rule directories to the
    bundled ones (or replaces them with a RuleSet). With `verify`, the result is compared with the
    original on `example_inputs` and `n_random` random inputs (default 1, see `verify.N_RANDOM`) in
    the model's own dtype when it is a half one, float32 and float64, and a difference beyond rounding
    raises VerificationError saying where it appeared. The passes in another dtype than the model's
    run the original and minimized programs node by node with each parameter cast as it is read, so
    verification holds no converted copy of either model (peak memory: the result plus activations).

    Only rules with a current certificate are applied. A node whose rule has none is left as is and
    the rule is listed in `report.refused_rules` with the reason; with `strict`, UncertifiedRuleError
    names it instead.

    >>> import torch, sr_ir
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> with torch.no_grad():  # unit 1 is relu(0 * x - 1) = 0: dead
    ...     _ = net[0].weight[1].zero_(), net[0].bias[1].fill_(-1.0)
    >>> result = sr_ir.minimize(net, (torch.randn(2, 4),))
    >>> result.report.params_before, result.report.params_after
    (23, 16)
    >>> x = torch.randn(5, 4)
    >>> bool(torch.allclose(result.module(x), net(x), atol=1e-6))
    True
    """
    from ..backend import emit
    from ..frontend import lower

    rs = resolve_rules(rules)
    t0 = time.perf_counter()
    raise_book = None
    if isinstance(model, Program):
        original = model
    else:
        if not example_inputs and not isinstance(model, ExportedProgram):
            raise SrIrError("minimize needs example inputs for an nn.Module")
        raise_book = RuleBook(rs, strict=strict, stage="raise")
        original = lower(model, example_inputs, rules=rs, raise_book=raise_book)
    t_lower = time.perf_counter() - t0
    program, report = minimize_program(original, rs, progress=progress, strict=strict)
    if raise_book is not None:  # what raising applied is part of what ran
        report.rules_used = sorted({*report.rules_used, *raise_book.used})
        report.refused_rules = dict(sorted({**raise_book.refused, **report.refused_rules}.items()))
    program = _unaliased(program, original)
    module = emit(program, rs, share_weights=True)  # the module's tensors are the result program's
    report.seconds["lower"] = t_lower
    report.buffers_after = _buffer_bytes(program)
    if verify:
        t1 = time.perf_counter()
        # the user's model in its own dtype (the lowering checked with the rest), the original program
        # in the other dtypes (no converted copy); a Program given is its own reference, sharing weights
        reference = (model if isinstance(model, nn.Module) else model.module() if isinstance(model, ExportedProgram)
                     else emit(original, rs, share_weights=True))
        inputs = list(example_inputs) if example_inputs else _sample(original)
        report.verification = same_function(reference, module, inputs, n_random=n_random, tolerance=tolerance,
                                            rules=rs, original_program=original).to_dict()
        report.seconds["verify"] = time.perf_counter() - t1
    report.seconds["total"] = time.perf_counter() - t0
    return Minimized(module, program, report, original)


def _unaliased(program: Program, original: Program) -> Program:
    """`program` with a copy of each weight that shares storage with one of `original` (a tensor no
    rewrite touched is the lowered model's, which is the user's model's storage): the emitted module
    shares the result's tensors, and training it must not write into the model it came from."""
    theirs = {t.untyped_storage().data_ptr() for t in original.weights.values() if t.device.type != "meta"}
    for name, t in program.weights.items():
        if t.device.type != "meta" and t.untyped_storage().data_ptr() in theirs:
            program.weights[name] = t.detach().clone(memory_format=torch.contiguous_format)
    return program


def _sample(p: Program) -> list[torch.Tensor]:
    return list(sample_inputs(p, batch=2))


def _buffer_bytes(p: Program) -> int:
    return sum(p.weights[b].numel() * p.weights[b].element_size() for b in p.buffers if b in p.weights)


__all__ = ["Minimized", "minimize", "minimize_program", "removal_rows", "resolve_rules"]
