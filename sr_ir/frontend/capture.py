"""Capture a module's ATen graph faster than torch.export, for the same lowering.

torch.export (non-strict) traces with fake tensors whose batch dim is a symbol; reasoning about that
symbol (guards, sympy) is most of its cost, about 3x a trace at static shapes. This capture traces at
static shapes, pre-dispatch, through `torch.func.functional_call`, so the graph holds the same ATen ops
export's training IR holds (not decomposed, in-place ops as written), and reintroduces the batch
symbol afterwards: the batch is traced at a size no other dim plausibly has (a large prime, `TRACE_BATCH`),
so every integer of the graph that is a multiple of it is a multiple of the batch, and the lowering
reads it as one (`_Lowering.sym`).

It declines (returns None, and the caller uses torch.export) wherever that reading could differ from
export's: inputs whose leading dims differ, graphs with anything but ATen ops (autocast regions, which
export turns into submodules), tensor constants (which export lifts under names of its own), and models
whose trace fails or runs on and on (a Python loop over the batch). Lowering the captured graph checks
the rest: a batch-derived integer that is not a multiple of the batch (`x.size(0) // 2`) leaves a huge
literal in the program, which `leaked_batch` finds, and the caller lowers through torch.export again.
Equivalence with torch.export over the test zoo is tests/frontend/test_capture.py and
benchmarks/capture_equivalence.py.
"""
from __future__ import annotations

import inspect
import operator
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

# The batch size the capture traces at: a prime (so no product of other dims is a multiple of it by
# chance) above any real dim, yet small enough that shapes times it stay far inside int64. Fake tensors
# hold no data, so the size costs nothing.
TRACE_BATCH = 2**31 - 1

# Integers at least this large that are not multiples of TRACE_BATCH mark a batch size used in other
# arithmetic (see `leaked_batch`); no dim or attribute of a real model comes near it.
LEAK_THRESHOLD = 2**26

# A trace that makes more torch calls than this is a Python loop over the (huge) traced batch: the
# capture gives up and leaves the model to torch.export, which specializes such a batch. (ConvNeXt-Tiny
# makes about 7,600 calls, a 32-layer decoder a few thousand.)
MAX_CALLS = 20_000

# Calls that return one tensor per index of a dim (`for row in x` unbinds x): on the traced batch that
# would be 2**31 tensors, so such a call on a dim that large declines the capture before it runs. So
# does taking one element of the batch (`x[i]`, `x.select(0, i)`): the first step of a loop over it.
_PER_INDEX = {"unbind", "__iter__", "split", "unsafe_split"}
_ONE_INDEX = {"__getitem__", "select"}


@dataclass
class Signature:
    """The part of torch.export's graph signature the lowering reads."""

    inputs_to_parameters: dict[str, str] = field(default_factory=dict)
    inputs_to_buffers: dict[str, str] = field(default_factory=dict)
    inputs_to_lifted_tensor_constants: dict[str, str] = field(default_factory=dict)
    user_inputs: list[str] = field(default_factory=list)
    input_specs: list[Any] = field(default_factory=list)  # no constant inputs: keyword flags are baked in


@dataclass
class Captured:
    """A traced graph in the shape of the ExportedProgram fields the lowering reads.

    `batch_size` is the size the leading dims of the inputs were traced at (TRACE_BATCH for a dynamic
    batch, None at the example's static shapes)."""

    graph_module: torch.fx.GraphModule
    graph_signature: Signature
    state_dict: dict[str, torch.Tensor]
    constants: dict[str, torch.Tensor]
    batch_size: int | None


class _CallLimit(torch.overrides.TorchFunctionMode):
    """Stops a trace after MAX_CALLS torch calls (see MAX_CALLS)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.calls += 1
        if self.calls > MAX_CALLS:
            raise _Declined(f"more than {MAX_CALLS} torch calls")
        name = getattr(func, "__name__", None)
        if name in _PER_INDEX or name in _ONE_INDEX:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and _over_batch(name, x, args[1:], kwargs or {}):
                raise _Declined(f"{name} over the traced batch")
        return func(*args, **(kwargs or {}))


def _over_batch(name: str, x: torch.Tensor, rest: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether a per-index call (see _PER_INDEX) runs over a dim of the traced batch's size."""
    if name == "__iter__":
        return x.dim() > 0 and x.shape[0] >= LEAK_THRESHOLD
    if name in _PER_INDEX:
        # one tensor per index only along the dim the call splits: `qkv.unbind(0)` over a leading dim of
        # 3 (timm's attention) or `split(width, dim=2)` (GPT-2's packed projection) is not a batch loop
        at = 0 if name == "unbind" else 1
        dim = rest[at] if len(rest) > at else kwargs.get("dim", 0)
        if not isinstance(dim, int) or x.dim() == 0:
            return True
        return x.shape[dim] >= LEAK_THRESHOLD
    if name == "select":
        dim = rest[0] if rest else kwargs.get("dim", 0)
        return isinstance(dim, int) and x.dim() > 0 and x.shape[dim] >= LEAK_THRESHOLD
    index = rest[0] if rest else None
    first = index[0] if isinstance(index, tuple) and index else index
    return isinstance(first, int) and not isinstance(first, bool) and x.dim() > 0 and x.shape[0] >= LEAK_THRESHOLD


class _Declined(Exception):
    """The capture cannot promise export's graph for this model."""


def capture(model: nn.Module, example_inputs: Sequence[Any], kwargs: dict[str, Any],
            dynamic_batch: bool = True) -> Captured | None:
    """The model's pre-dispatch ATen graph traced with fake tensors, or None where only torch.export
    gives the graph the lowering expects (see the module docstring). `kwargs` are constant keyword
    arguments (`use_cache=False`) passed as they are."""
    try:
        return _capture(model, tuple(example_inputs), kwargs, dynamic_batch)
    except _Declined:
        return None
    except Exception:  # the model's own code failed on the traced sizes: torch.export reports it properly
        return None


def _capture(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], dynamic_batch: bool) -> Captured:
    from torch._export.utils import _compiling_state_context
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise _Declined("inputs that are not all tensors")
    if dynamic_batch and any(isinstance(m, nn.RNNBase) and not m.batch_first for m in model.modules()):
        # a sequence-first recurrent layer reads the leading dim as time: its kernel would step through
        # the traced batch (2**31 - 1 steps) inside one call, where no call limit can see it
        raise _Declined("a sequence-first recurrent layer")
    names = _argument_names(model, len(args))
    batch = _batch_size(args) if dynamic_batch else None
    # every name of a tied tensor is a graph input, as in export: the trace reads it under the name the
    # forward uses (T5's `encoder.embed_tokens.weight`, not `shared.weight`), which names the parameter
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    mode = FakeTensorMode()
    fake_state = {k: mode.from_tensor(v, static_shapes=True) for k, v in {**params, **buffers}.items()}
    fake_args = [_fake_input(mode, a, batch) for a in args]

    def forward(state: dict[str, torch.Tensor], *xs: torch.Tensor) -> Any:
        return torch.func.functional_call(model, state, xs, kwargs)

    attrs = _tensor_attributes(model)
    try:
        # export's flags: libraries branch on them (transformers builds an attention mask under export
        # that it skips in eager mode), and the graph must be the one export sees
        with torch.no_grad(), warnings.catch_warnings(), _compiling_state_context(), mode, _CallLimit():
            warnings.simplefilter("ignore")
            gm = make_fx(forward, tracing_mode="real", pre_dispatch=True, record_stack_traces=True)(fake_state, *fake_args)
    finally:
        _restore_tensor_attributes(attrs)  # forward pre-hooks (torch.nn.utils.prune) assign `weight`
    _drop_own_frames(gm.graph)
    sig = Signature()
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    keys = list(fake_state)
    if len(placeholders) != len(keys) + len(args):
        raise _Declined("unexpected graph inputs")
    # export's placeholder names: p_/b_ and the dotted name with underscores, the forward's argument names
    for node, key in zip(placeholders, keys):
        kind = "p_" if key in params else "b_"
        node._rename(kind + key.replace(".", "_"))
        (sig.inputs_to_parameters if key in params else sig.inputs_to_buffers)[node.name] = key
    taken = {n.name for n in gm.graph.nodes}
    for node, name in zip(placeholders[len(keys):], names):
        if name in taken:
            node._rename(name)
        else:  # export's name even where fx's namespace would avoid a builtin (`input`, not `input_1`)
            node.name = name
        taken.add(node.name)
        sig.user_inputs.append(node.name)
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            raise _Declined("a tensor constant")
        if node.op == "call_function" and not (isinstance(node.target, torch._ops.OpOverload)
                                               or node.target is operator.getitem):
            raise _Declined(f"a call of {node.target}")
    state = {k: v.detach() for k, v in {**params, **buffers}.items()}
    return Captured(gm, sig, state, {}, batch)


def _drop_own_frames(graph: torch.fx.Graph) -> None:
    """Remove this module's `forward` wrapper from the recorded stack traces, which then read as
    export's: errors name the innermost frame outside torch (`lower.source_line`), and that must be the
    model's, not this file's."""
    own = f'File "{__file__}"'
    for node in graph.nodes:
        trace = node.meta.get("stack_trace")
        if not trace or own not in trace:
            continue
        lines = trace.splitlines()
        keep: list[str] = []
        skip = False
        for line in lines:
            if line.lstrip().startswith('File "'):
                skip = line.lstrip().startswith(own)
            if not skip:
                keep.append(line)
        node.meta["stack_trace"] = "\n".join(keep).lstrip() + ("\n" if trace.endswith("\n") else "")


def _argument_names(model: nn.Module, count: int) -> list[str]:
    """The forward's names for its first `count` positional arguments (export names the graph's inputs
    so); a forward taking *args is declined."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        raise _Declined("no signature") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < count:
        raise _Declined("variadic forward")
    return [p.name for p in positional[:count]]


def _batch_size(args: tuple[torch.Tensor, ...]) -> int | None:
    """TRACE_BATCH where export would make the leading dims one dynamic symbol: every input has rank > 0
    and the same leading size above 1 (export specializes sizes 0 and 1). Anything else is declined."""
    sizes = {a.shape[0] for a in args if a.dim() > 0}
    if any(a.dim() == 0 for a in args) or len(sizes) != 1:
        raise _Declined("inputs without one common leading dim")
    size = sizes.pop()
    return TRACE_BATCH if size > 1 else None


def _fake_input(mode: Any, a: torch.Tensor, batch: int | None) -> torch.Tensor:
    fake = mode.from_tensor(a, static_shapes=True)
    if batch is None:
        return fake
    with mode:  # a contiguous fake tensor of the traced batch (its data is never read)
        return torch.empty((batch, *a.shape[1:]), dtype=a.dtype, device=a.device)


def _tensor_attributes(model: nn.Module) -> list[tuple[nn.Module, dict[str, Any]]]:
    return [(m, {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)}) for m in model.modules()]


def _restore_tensor_attributes(saved: list[tuple[nn.Module, dict[str, Any]]]) -> None:
    for m, attrs in saved:
        for k, v in attrs.items():
            m.__dict__[k] = v


def leaked_batch(prog: Any) -> bool:
    """Whether a program lowered from a capture at TRACE_BATCH holds an integer computed from the traced
    batch other than a multiple of it (a type's dim or an integer attribute at least LEAK_THRESHOLD)."""

    def big(v: Any) -> bool:
        if isinstance(v, bool):
            return False
        if isinstance(v, int):
            return abs(v) >= LEAK_THRESHOLD and abs(v) < 2**62  # 2**62 and up: "to the end" sentinels
        if isinstance(v, (list, tuple)):
            return any(big(x) for x in v)
        return False

    types = [t for _, t in prog.inputs] + [n.type for n in prog.nodes] + list(prog.params.values())
    if any(big(d) for t in types for d in t.shape):
        return True
    return any(big(v) for n in prog.nodes for v in n.attrs.values())


def fingerprint(prog: Any, value_names: bool = True) -> str:
    """A program as text for comparing two captures: the IR text, each node's source line, which
    parameters are buffers, the report's name map, and a digest of every weight's values (bitwise).

    `value_names=False` writes each value (`%name`) by its order of first appearance instead: torch.export
    spends names on its symbolic size arithmetic (`mul_11 = sym_size * 8`), which a capture at static
    shapes has no node for, so the two can number the same op differently (`%mul_14` / `%mul_10`).
    Parameter names (`@...`) are never normalised."""
    import hashlib
    import re

    lines = [prog.to_text()]
    lines += [f"origin %{n.name}: {n.origin}" for n in prog.nodes]
    lines.append(f"buffers {sorted(prog.buffers)}")
    lines.append(f"origins {sorted((getattr(prog, 'origins', None) or {}).items())}")
    for name in sorted(prog.weights):
        w = prog.weights[name].detach().cpu().contiguous().reshape(-1)
        digest = hashlib.sha256(w.view(torch.uint8).numpy().tobytes() if w.numel() else b"").hexdigest()[:16]
        lines.append(f"weight {name} {w.dtype} {tuple(w.shape)} {digest}")
    text = "\n".join(lines)
    if value_names:
        return text
    order: dict[str, str] = {}
    return re.sub(r"%[A-Za-z_][A-Za-z0-9_.]*", lambda m: order.setdefault(m.group(0), f"%v{len(order)}"), text)
