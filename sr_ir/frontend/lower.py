"""Lower an nn.Module to a Program through torch.export.

The ATen graph is walked in order. Ops with an `aten` mapping in rules/ become IR nodes by that
mapping alone; layout and framework idioms that need arithmetic on shapes (views, transposes, alpha
scaling, identities in eval mode) are handled by the small table in `handlers.py`. Subgraphs that read
only parameters and constants (pruning masks `weight_orig * weight_mask`, parametrizations, lifted
constants) are evaluated once and stored as parameters. Anything else stops lowering with an error
naming the ATen op and the user's source line.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import sympy
import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from ..errors import SrIrError, UnsupportedOpError
from ..ir.checker import check_program
from ..ir.program import Node, ParamRef, Program, ValueRef, fresh_name
from ..ir.types import DTYPE_NAMES, FLOAT_DTYPES, TensorType, normalize_dim, symbol
from ..lang.loader import RuleSet
from .raising import raise_program
from ..rewrite.rulebook import RuleBook


def export_model(model: nn.Module, example_inputs: Sequence[Any], dynamic_batch: bool = True) -> ExportedProgram:
    """torch.export in eval mode, with a dynamic leading (batch) dim where the model allows one."""
    model = model.eval()
    args = tuple(example_inputs)
    kwargs = _without_cache(model)
    dynamic = None
    if dynamic_batch:
        dynamic = tuple({0: Dim.AUTO} if isinstance(a, torch.Tensor) and a.dim() > 0 else None for a in args)
        dynamic += (None,) * len(kwargs)  # export matches the spec against args and kwargs together
    try:
        # a failed trace prints its partial graph to stderr: the failure is this function's one-line
        # SrIrError (or a retry with static shapes) instead
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            # torch.nn.utils.prune's hook assigns `weight = weight_orig * weight_mask` during the
            # forward; export warns about the attribute, and the lowering folds that product on purpose
            warnings.filterwarnings("ignore", message="The tensor attributes? .* (was|were) assigned during export")
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic, strict=False)
    except Exception as e:  # torch.export raises many types; report the first line, the user's model is at fault
        if dynamic is None:
            raise SrIrError(f"torch.export failed: {str(e).splitlines()[0]}") from e
        return export_model(model, example_inputs, dynamic_batch=False)  # static shapes: a failure is one line too


def _without_cache(model: nn.Module) -> dict[str, Any]:
    """Keyword arguments that turn off a decoder's key/value cache (`use_cache=False`) where the forward
    takes one: the cache speeds up generation but is not part of the function, and returning it would
    make every cached key and value an output that no head may leave."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def lower(
    model: nn.Module | ExportedProgram,
    example_inputs: Sequence[Any] = (),
    *,
    dynamic_batch: bool = True,
    rules: RuleSet | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    name: str | None = None,
    check: bool = True,
    raise_book: RuleBook | None = None,
    capture: str = "trace",
) -> Program:
    """Lower `model` (or an ExportedProgram) to a type-checked Program holding its weights.

    A module emitted by sr-ir is read back from the program it was generated from, with its current
    weights (after fine-tuning, say), when its parameters and the example inputs still fit that program.

    `raise_book` runs the raise rules (default: every certified `raise.*` rule); its `used` afterwards
    names the rules that raised something. `rules`, as `sr_ir.minimize` takes them: None (the bundled
    rules), a RuleSet, or rule directories added to the bundled ones.

    `capture` chooses how a module's ATen graph is obtained: "trace" (the default) traces it with fake
    tensors at static shapes and reintroduces the batch symbol (sr_ir/frontend/capture.py, about 3x
    faster), and uses torch.export wherever that capture cannot promise export's graph; "export" always
    uses torch.export. Both give the same program (tests/frontend/test_capture.py).

    >>> import torch, sr_ir
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> prog = sr_ir.lower(net, (torch.randn(2, 4),))
    >>> [n.op for n in prog.nodes], prog.inputs[0][1]
    (['linear', 'relu'], TensorType(dtype='f32', shape=(N, 4)))
    """
    from ..minimization.api import resolve_rules  # (lazy: the minimization package imports this one)

    if capture not in CAPTURES:
        raise SrIrError(f"unknown capture {capture!r} (one of {', '.join(CAPTURES)})")
    rules = resolve_rules(rules)
    emitted = _emitted_program(model, example_inputs)
    if emitted is not None:
        if check:
            check_program(emitted, rules)
        return emitted
    if isinstance(model, ExportedProgram):
        ep = model
        graph_name = name or "model"
    else:
        graph_name = name or _graph_name(type(model).__name__)
        if capture == "trace":
            traced = _lower_traced(model, example_inputs, dynamic_batch, rules, graph_name, raise_book)
            if traced is not None:
                return traced
        ep = export_model(model, example_inputs, dynamic_batch)
    try:
        prog = _Lowering(functional(ep), rules, graph_name).run()
    except UnsupportedOpError:
        if not dynamic_batch or isinstance(model, ExportedProgram):
            raise
        # model libraries build masks from the batch size (arange over it): lower at static shapes
        return lower(model, example_inputs, dynamic_batch=False, rules=rules, name=name, check=check,
                     raise_book=raise_book, capture=capture)
    prog = raise_program(_without_identity_views(prog), rules, raise_book)
    if check:
        check_program(prog, rules)
    return prog


# The ways `lower` obtains a module's ATen graph (see its docstring).
CAPTURES = ("trace", "export")


def _lower_traced(model: nn.Module, example_inputs: Sequence[Any], dynamic_batch: bool, rules: RuleSet,
                  graph_name: str, raise_book: RuleBook | None) -> Program | None:
    """`lower` through the fast capture (sr_ir/frontend/capture.py), or None where torch.export must
    give the graph: the capture declined, the graph needs torch's functionalization, the batch leaked
    into other arithmetic, or lowering failed (the export path then reports the failure, or falls back,
    exactly as it always has). The program is always type-checked: the check is what confirms that
    the reintroduced batch symbol is consistent."""
    from .capture import capture, leaked_batch

    model = model.eval()
    cap = capture(model, example_inputs, _without_cache(model), dynamic_batch)
    if cap is None or needs_functionalization(cap.graph_module.graph):
        return None
    try:
        prog = _Lowering(cap, rules, graph_name, traced_batch=cap.batch_size).run()  # type: ignore[arg-type]
        if cap.batch_size is not None and leaked_batch(prog):
            return None
        prog = raise_program(_without_identity_views(prog), rules, raise_book)
        check_program(prog, rules)
    except Exception:  # any failure: the torch.export path is the reference, its error the one to see
        return None
    return prog


def _mutated_argument(target: Any) -> int | None:
    """The index of the argument an in-place ATen op writes (`relu_`, `add_`, `copy_`), else None."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    for i, a in enumerate(target._schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            return i
    return None


def _is_view(target: Any) -> bool:
    """Whether an ATen op returns an alias of an input (view, slice, transpose, ...)."""
    if not isinstance(target, torch._ops.OpOverload):
        return False
    return any(r.alias_info is not None and not r.alias_info.is_write for r in target._schema.returns)


def out_of_place(target: Any) -> Any:
    """The functional twin of an in-place op that writes its first argument (`aten.relu_.default` ->
    `aten.relu.default`), or None when there is none."""
    if _mutated_argument(target) != 0:
        return None
    packet = target.overloadpacket.__name__
    if not packet.endswith("_") or packet.endswith("__"):
        return None
    twin = getattr(torch.ops.aten, packet[:-1], None)
    return getattr(twin, target._overloadname, None) if twin is not None else None


def functional(ep: ExportedProgram) -> ExportedProgram:
    """An exported program whose in-place ops the walk can treat as functional.

    Model code writes in place (`nn.ReLU(inplace=True)`, `out += identity`). When every such write
    lands on a value that nothing else aliases, the walk replaces the op by its functional twin and
    rebinds the written name, which keeps the graph (and so the IR) exactly as the user wrote it.
    Writes to views, inputs, weights or through ops without a twin (`copy_` into a slice) need
    torch's functionalization, which also rewrites a few ops (batch norm into its no-training form)."""
    return ep.run_decompositions({}) if needs_functionalization(ep.graph_module.graph) else ep


def needs_functionalization(graph: torch.fx.Graph) -> bool:
    """Whether some in-place op of `graph` writes a value the walk cannot rebind (see `functional`)."""
    from .handlers import IDENTITY_OPS

    views = {n.name for n in graph.nodes if n.op == "call_function" and _is_view(n.target)}
    for n in graph.nodes:
        if n.op != "call_function":
            continue
        i = _mutated_argument(n.target)
        if i is None:
            continue
        written = n.args[i] if i < len(n.args) else None
        twin = out_of_place(n.target)
        if twin is not None and str(twin) in IDENTITY_OPS:
            continue  # dropout_ in eval mode writes nothing
        simple = (
            twin is not None
            and isinstance(written, torch.fx.Node)
            and written.op == "call_function"
            and written.name not in views
            # a value viewed elsewhere would see the write through that view
            and not any(_is_view(u.target) for u in written.users if u is not n)
        )
        if not simple:
            return True
    return False


def _live_nodes(graph: torch.fx.Graph) -> set[torch.fx.Node]:
    """The nodes the outputs depend on. Model libraries leave dead code in the graph (Hugging Face's
    mask functions build an `arange` over the batch that no mask reads), and lowering it would fail
    for nothing. A write in place counts as live: readers of the written value depend on it through the
    name, not through an edge."""
    roots = [n for n in graph.nodes if n.op == "output" or (n.op == "call_function" and _mutated_argument(n.target) is not None)]
    live: set[torch.fx.Node] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(n.all_input_nodes)
    return live


# The constant pads of rules/ops/padding.rules: with every entry 0 a pad is the identity (Swin pads its
# windows by `-size % window`, which is 0 whenever the map divides into windows).
_PADS = ("pad1d", "pad2d", "pad3d")


def _without_identity_views(p: Program) -> Program:
    """Drop reshapes and permutes that leave the type unchanged (`x.view(len(x), -1)` on an already
    flat input, an identity permutation) and pads by zeros everywhere: they carry no structure but
    would stand between a network input and its first layer, or between a channel and its rules."""
    types = p.value_types()
    alias: dict[str, str] = {}
    for n in p.nodes:
        if n.op not in ("reshape", "permute", *_PADS) or n.name in p.outputs:
            continue
        src = n.operands[0]
        if not isinstance(src, ValueRef) or types[src.name] != n.type:
            continue
        if n.op == "permute" and list(n.attrs["dims"]) != list(range(n.type.rank)):
            continue
        if n.op in _PADS and any(n.attrs.get("pad", [])):
            continue
        alias[n.name] = alias.get(src.name, src.name)
    if alias:
        p.replace_uses(alias)
        p.nodes = [n for n in p.nodes if n.name not in alias]
    return p


def _emitted_program(model: Any, example_inputs: Sequence[Any]) -> Program | None:
    skeleton = getattr(model, "sr_ir_program", None)
    if not isinstance(skeleton, Program) or not isinstance(model, nn.Module):
        return None
    state = model.state_dict()
    if set(state) != set(skeleton.params):
        return None
    for name, t in skeleton.params.items():
        w = state[name]
        if tuple(w.shape) != tuple(t.shape) or w.dtype != t.torch_dtype:
            return None  # converted (.double(), ...) since emission: lower it through torch.export
    if len(example_inputs) != len(skeleton.inputs):
        return None
    for x, (_, t) in zip(example_inputs, skeleton.inputs):
        if not isinstance(x, torch.Tensor) or x.dim() != t.rank or x.dtype != t.torch_dtype:
            return None
        if any(isinstance(d, int) and d != s for d, s in zip(t.shape, x.shape)):
            return None
    prog = skeleton.copy(weights=False)
    prog.weights = {name: state[name].detach().cpu().clone() for name in skeleton.params}
    return prog


def _graph_name(cls: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls).lower()
    s = re.sub(r"[^a-z0-9_]", "_", s)
    return s if s and (s[0].isalpha() or s[0] == "_") else "model"


def source_line(node: torch.fx.Node) -> str:
    """The user's file:line for an FX node, from the stack trace export records (innermost user frame)."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    for f, line in reversed(frames):
        # torchvision and torchaudio live beside torch in site-packages: match the folder, not a prefix
        if "/torch/" not in f:
            return f"{f}:{line}"
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else "<unknown source>"


@dataclass
class _Const:
    """A tensor known at lowering time (parameter, buffer, lifted constant, or folded)."""

    tensor: torch.Tensor
    name: str
    is_buffer: bool
    # (the model's state_dict key, how) when this tensor is derived from one under another name
    # (GPT-2's transposed Conv1D weight, a part of a packed projection): the report's name map
    origin: tuple[str | None, str] | None = None  # key None: no model tensor (computed at lowering)


# The batch sizes at which a value computed from the batch size alone is evaluated (see _BatchConst).
SAMPLE_BATCHES = (1, 2, 3, 5)


@dataclass
class _BatchConst:
    """A tensor that depends on the batch size but on no input value.

    Model libraries build attention masks and position ids from shapes: a constant expanded over the
    batch, indexed with `arange(batch)`. Such code is evaluated at several batch sizes; where an IR
    node reads the value, every sample must be a single row repeated along a leading batch axis, the
    same row at every size. That row becomes a parameter, which broadcasts against the batch."""

    values: dict[int, torch.Tensor]
    name: str


@dataclass
class _Lowering:
    ep: ExportedProgram
    rules: RuleSet
    name: str
    env: dict[str, Any] = field(default_factory=dict)  # fx node name -> ValueRef | _Const | sym | py value
    nodes: list[Node] = field(default_factory=list)
    params: dict[str, TensorType] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: set[str] = field(default_factory=set)
    symbols: dict[sympy.Symbol, sympy.Symbol] = field(default_factory=dict)
    inputs: list[tuple[str, TensorType]] = field(default_factory=list)
    used_names: set[str] = field(default_factory=set)
    origins: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # param -> (model key, how)
    batch: Any = None  # the batch symbol, when the leading dim of the first input is dynamic
    # the size the batch was traced at (sr_ir/frontend/capture.py): its multiples are multiples of `batch`
    traced_batch: int | None = None

    # ---- naming and types -----------------------------------------------------------------
    def fresh(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.]", "_", base) or "v"
        name = fresh_name(base, self.used_names)
        self.used_names.add(name)
        return name

    def sym(self, expr: Any) -> Any:
        """Translate an export symbol expression (s77, 2*s77) into ours (N, 2*N)."""
        if isinstance(expr, torch.SymInt):
            expr = expr.node.expr
        if isinstance(expr, int):
            return self.literal(expr)
        expr = sympy.sympify(expr)
        subs = {}
        ours = set(self.symbols.values())
        for s in expr.free_symbols:
            if s in ours:  # already translated (a size read earlier through sym_size)
                continue
            if s not in self.symbols:
                self.symbols[s] = symbol("N" if not self.symbols else f"S{len(self.symbols)}")
            subs[s] = self.symbols[s]
        return normalize_dim(expr.xreplace(subs))

    def literal(self, v: Any) -> Any:
        """An integer of the graph as a dim expression: a multiple of the traced batch size is that
        multiple of the batch symbol (a captured graph holds sizes, not symbols); anything else as is."""
        b = self.traced_batch
        if b is not None and type(v) is int and v and v % b == 0:
            return normalize_dim((v // b) * self.batch)
        return v

    def ttype(self, val: Any, where: torch.fx.Node) -> TensorType:
        if not isinstance(val, torch.Tensor):
            raise UnsupportedOpError(f"{where.target} produces a non-tensor value", None)
        if val.dtype not in DTYPE_NAMES:
            raise UnsupportedOpError(f"dtype {val.dtype} (from {where.target} at {source_line(where)}) is not supported")
        return TensorType(DTYPE_NAMES[val.dtype], tuple(self.sym(d) for d in val.shape))

    # ---- the walk --------------------------------------------------------------------------
    def run(self) -> Program:
        sig = self.ep.graph_signature
        state = dict(self.ep.state_dict)
        state.update(getattr(self.ep, "constants", {}) or {})
        param_of = dict(sig.inputs_to_parameters)
        buffer_of = dict(sig.inputs_to_buffers)
        const_of = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
        user_inputs = set(sig.user_inputs)
        constant_kwargs = {
            s.arg.name for s in sig.input_specs
            if s.kind == torch.export.graph_signature.InputKind.USER_INPUT
            and isinstance(s.arg, torch.export.graph_signature.ConstantArgument)
        }
        graph = self.ep.graph_module.graph
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if self.traced_batch is not None:  # traced at static shapes: the batch is N by construction
            self.batch = symbol("N")
            self.symbols[sympy.Symbol("traced_batch")] = self.batch
        # Name the batch symbol N after the first user input's leading dim.
        for n in placeholders:
            if n.name in user_inputs:
                val = n.meta.get("val")
                if isinstance(val, torch.Tensor) and val.dim() > 0 and isinstance(val.shape[0], torch.SymInt):
                    self.batch = self.sym(val.shape[0])
                break
        for n in placeholders:
            if n.name in constant_kwargs:
                self.env[n.name] = n.meta.get("val")  # a flag export specialized on (use_cache=False)
            elif n.name in user_inputs:
                val = n.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise UnsupportedOpError(f"non-tensor model input {n.name!r} is not supported")
                iname = self.fresh(n.name)
                self.inputs.append((iname, self.ttype(val, n)))
                self.env[n.name] = ValueRef(iname)
            elif n.name in param_of:
                self.env[n.name] = _Const(state[param_of[n.name]].detach(), param_of[n.name], False)
            elif n.name in buffer_of:
                self.env[n.name] = _Const(state[buffer_of[n.name]].detach(), buffer_of[n.name], True)
            elif n.name in const_of:
                self.env[n.name] = _Const(state[const_of[n.name]].detach(), const_of[n.name], True)
            else:
                raise UnsupportedOpError(f"graph input {n.name!r} of an unknown kind")
        outputs: list[str] = []
        out_types: list[TensorType] = []
        from .handlers import HANDLERS, IDENTITY_OPS

        aten_index = aten_candidates(self.rules)
        live = _live_nodes(graph)
        for n in graph.nodes:
            if n.op == "call_function" and n in live:
                self.env[n.name] = self.call(n, HANDLERS, IDENTITY_OPS, aten_index)
            elif n.op == "output":
                for o in _flatten(n.args[0]):
                    v = self.env.get(o.name) if isinstance(o, torch.fx.Node) else o
                    if isinstance(v, _Const):
                        v = self.materialize_identity(v, o)
                    if not isinstance(v, ValueRef):
                        raise UnsupportedOpError(f"model output {o} is not a tensor computed from the inputs")
                    outputs.append(v.name)
                    out_types.append(self.value_type(v))
        prog = Program(self.name, self.inputs, self.params, self.nodes, outputs, out_types, self.weights, self.buffers)
        prog.origins = {n: o for n, o in self.origins.items() if n in prog.params}
        return prog

    def value_type(self, v: ValueRef) -> TensorType:
        for n in reversed(self.nodes):
            if n.name == v.name:
                return n.type
        for name, t in self.inputs:
            if name == v.name:
                return t
        raise KeyError(v.name)

    def materialize_identity(self, c: _Const, where: Any) -> ValueRef:
        raise UnsupportedOpError("a model output that does not depend on the inputs is not supported")

    def param(self, c: _Const) -> ParamRef:
        """Register a known tensor as a parameter (once) and return a reference to it."""
        name = c.name
        if name in self.weights and self.weights[name] is not c.tensor:
            name = self.fresh(name)
            c.name = name
        if name not in self.weights:
            self.used_names.add(name)
            t = c.tensor
            self.weights[name] = t
            self.params[name] = TensorType.of(t)
            if c.is_buffer or not t.is_floating_point():
                self.buffers.add(name)
            if c.origin is not None and c.origin[0] != name:
                self.origins[name] = c.origin
        return ParamRef(name)

    def arg(self, a: Any) -> Any:
        """An fx argument as an IR-side value: ValueRef, _Const, symbolic dim, list or Python scalar."""
        if isinstance(a, torch.fx.Node):
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return [self.arg(x) for x in a]
        return self.literal(a)

    def call(self, n: torch.fx.Node, handlers: dict, identities: set, aten_index: dict) -> Any:
        twin = out_of_place(n.target)
        if twin is not None:
            # `functional` made sure the written value has no aliases: compute the functional op and
            # let later readers of the written name see its result
            result = self._call(n, twin, handlers, identities, aten_index)
            self.env[n.args[0].name] = result
            return result
        return self._call(n, n.target, handlers, identities, aten_index)

    def _call(self, n: torch.fx.Node, target: Any, handlers: dict, identities: set, aten_index: dict) -> Any:
        key = str(target) if isinstance(target, torch._ops.OpOverload) else getattr(target, "__name__", str(target))
        if key == "wrap_with_autocast":
            return self.autocast_region(n, handlers, identities, aten_index)
        args = normalize_args(n)
        values = [self.arg(a) for a in args]
        if key in identities:
            return values[0]
        if key == "getitem" and isinstance(values[0], (tuple, list)):
            return values[0][values[1]]  # an element of a multi-output op (kept with its own name)
        # Symbolic shape arithmetic (sym_size, operator.mul on SymInts) stays at lowering time.
        if isinstance(n.meta.get("val"), (torch.SymInt, int)) and not isinstance(n.meta.get("val"), bool):
            return self.sym(n.meta["val"])
        tensor_inputs = [v for v in _flatten(values) if isinstance(v, (ValueRef, _Const, _BatchConst))]
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor) and self.batch_only(values, tensor_inputs, val):
            return self.fold_batched(n)
        if isinstance(val, torch.Tensor) and (
            (tensor_inputs and all(isinstance(v, _Const) for v in tensor_inputs) and not _has_sym(values))
            # factories with static shapes (arange over the sequence length for position ids)
            or (not tensor_inputs and all(isinstance(d, int) for d in val.shape) and not _has_sym(values))
        ):
            return self.fold(n, args)
        if key in handlers:
            return handlers[key](self, n, values)
        if key in aten_index:
            return self.emit_candidates(n, key, aten_index[key], values)
        raise UnsupportedOpError(
            f"unsupported op {key} at {source_line(n)} (no declaration in rules/ maps it; "
            f"declare it with an `aten` line in a rule file)"
        )

    def autocast_region(self, n: torch.fx.Node, handlers: dict, identities: set, aten_index: dict) -> tuple:
        """A `torch.autocast(..., enabled=False)` block (timm's EfficientViT computes its linear attention
        in one), which export keeps as a submodule: its ops run in the dtypes the model casts to, so its
        graph is walked in place, its inputs bound to the block's arguments. An enabled block would let
        autocast choose lower-precision dtypes per op, which the IR does not model."""
        _device, _dtype, enabled, _cache, sub, *operands = n.args
        if enabled:
            raise UnsupportedOpError(
                f"torch.autocast(enabled=True) at {source_line(n)}: autocast picks op dtypes the IR does not "
                f"model; lower the model outside autocast"
            )
        graph = getattr(self.ep.graph_module, sub.target).graph
        placeholders = [m for m in graph.nodes if m.op == "placeholder"]
        outer = self.env
        self.env = {p.name: self.arg(a) for p, a in zip(placeholders, operands)}
        try:
            live = _live_nodes(graph)
            results: tuple = ()
            for m in graph.nodes:
                if m.op == "call_function" and m in live:
                    self.env[m.name] = self.call(m, handlers, identities, aten_index)
                elif m.op == "output":
                    results = tuple(self.arg(o) for o in _flatten(m.args[0]))
            return results
        finally:
            self.env = outer

    def fold(self, n: torch.fx.Node, args: list[Any]) -> _Const:
        """Evaluate a node that reads only known tensors; the result becomes a parameter if used."""

        def real(a: Any) -> Any:
            if isinstance(a, torch.fx.Node):
                v = self.env[a.name]
                if isinstance(v, (tuple, list)):  # a folded multi-output op (split of a known weight)
                    return type(v)(x.tensor if isinstance(x, _Const) else x for x in v)
                return v.tensor if isinstance(v, _Const) else v
            if isinstance(a, (list, tuple)):
                return type(a)(real(x) for x in a)
            return a

        with torch.no_grad():
            # the node's own args/kwargs: normalized args would pass kwarg-only ones positionally
            out = n.target(*[real(a) for a in n.args], **{k: real(v) for k, v in n.kwargs.items()})
        src = [self.env[a.name] for a in n.all_input_nodes if isinstance(self.env.get(a.name), _Const)]
        # Name the result after the trainable source (weight_orig, not weight_mask).
        src.sort(key=lambda c: c.is_buffer)
        base = src[0].name if src else n.name
        base = re.sub(r"(_orig|\.parametrizations\.(\w+)\.original\d*)$", lambda m: "." + m.group(2) if m.group(2) else "", base)
        base = base.replace(".parametrizations.", ".")
        if src:  # weight_orig * weight_mask is the model's weight: say what it came from
            key, before = src[0].origin or (src[0].name, "")
            how = "computed from " + ", ".join(c.name for c in src)
            origin = (key, f"{before}; {how}" if before else how)
        else:
            origin = (None, f"a constant the model computes ({n.target})")
        return _Const(out.detach(), base, all(c.is_buffer for c in src) if src else True, origin)

    def batch_only(self, values: list[Any], tensor_inputs: list[Any], val: torch.Tensor) -> bool:
        """Whether a node reads no input value but depends on the batch size (through a batch-sized
        value it reads, a size argument or its own shape)."""
        if self.batch is None or any(isinstance(v, ValueRef) for v in tensor_inputs):
            return False
        syms: set[Any] = set()
        for v in _flatten(values):
            if isinstance(v, sympy.Basic):
                syms |= v.free_symbols
        for d in val.shape:
            if isinstance(d, torch.SymInt) or self.traced_batch is not None:
                syms |= sympy.sympify(self.sym(d)).free_symbols
        batched = any(isinstance(v, _BatchConst) for v in tensor_inputs) or bool(syms)
        return batched and syms <= {self.batch}

    def fold_batched(self, n: torch.fx.Node) -> _Const | _BatchConst:
        """Evaluate a batch-only node at each sample batch size (a batch-independent result is a _Const)."""

        def real(a: Any, b: int) -> Any:
            if isinstance(a, torch.fx.Node):
                v = self.env[a.name]
                if isinstance(v, (tuple, list)):
                    return type(v)(real_value(x, b) for x in v)
                return real_value(v, b)
            if isinstance(a, (list, tuple)):
                return type(a)(real(x, b) for x in a)
            return real_value(self.literal(a), b)

        def real_value(v: Any, b: int) -> Any:
            if isinstance(v, _BatchConst):
                return v.values[b]
            if isinstance(v, _Const):
                return v.tensor
            if isinstance(v, sympy.Basic):
                return int(v.subs(self.batch, b))
            return v

        out: dict[int, torch.Tensor] = {}
        try:
            with torch.no_grad():
                for b in SAMPLE_BATCHES:
                    out[b] = n.target(*[real(a, b) for a in n.args], **{k: real(v, b) for k, v in n.kwargs.items()})
        except Exception as e:  # the op's own error on a concrete size: report it at the user's line
            raise UnsupportedOpError(f"{n.target} at {source_line(n)} on sizes computed from the batch: {e}") from None
        first = out[SAMPLE_BATCHES[0]]
        if all(t.shape == first.shape and torch.equal(t, first) for t in out.values()):
            return _Const(first.detach(), n.name, True, (None, "a constant the model computes from the batch size"))
        return _BatchConst({b: t.detach() for b, t in out.items()}, n.name)

    def batch_row(self, v: _BatchConst, n: torch.fx.Node) -> _Const:
        """The row a batch-only value repeats along its leading batch axis (see _BatchConst)."""
        row = v.values[SAMPLE_BATCHES[0]][:1]
        for b, t in v.values.items():
            if t.dim() == 0 or t.shape[0] != b or not torch.equal(t, row.expand_as(t)):
                raise UnsupportedOpError(
                    f"{n.target} at {source_line(n)} reads a value computed from the batch size that is not "
                    f"one row repeated over the batch"
                )
        return _Const(row.contiguous(), v.name, True, (None, "a constant the model computes from the batch size (its one row)"))

    def operand(self, v: Any, n: torch.fx.Node, broadcasts: bool = False) -> Any:
        """An fx value as an IR operand. `broadcasts`: the op reads this operand by broadcasting, so a
        batch-only value may stand as its single row."""
        if isinstance(v, _BatchConst) and broadcasts:
            v = self.batch_row(v, n)
        elif isinstance(v, _BatchConst):
            # the row, expanded back over the batch: every reader sees the shape the model computed
            row = self.param(self.batch_row(v, n))
            shape = [self.batch] + list(v.values[SAMPLE_BATCHES[0]].shape[1:])
            val = torch.empty(0).new_empty([SAMPLE_BATCHES[0]] + shape[1:], dtype=v.values[SAMPLE_BATCHES[0]].dtype)
            name = self.fresh(v.name + "_over_batch")
            t = TensorType(DTYPE_NAMES[val.dtype], tuple(shape))
            self.nodes.append(Node(name, "expand", [row], {"shape": shape}, t, origin=source_line(n)))
            return ValueRef(name)
        if isinstance(v, _Const):
            return self.param(v)
        if isinstance(v, (ValueRef,)) or v is None:
            return v
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return v
        raise UnsupportedOpError(f"{n.target} at {source_line(n)}: unsupported operand {v!r}")

    def attr(self, v: Any, kind: str, n: torch.fx.Node) -> Any:
        if v is None:
            return None
        if kind in ("ints", "floats", "dims"):
            if not isinstance(v, (list, tuple)):
                v = [v]
            return [self.attr(x, kind[:-1] if kind != "dims" else "dim", n) for x in v]
        if kind == "dim":
            return self.sym(v) if not isinstance(v, int) else v
        if kind == "int":
            if not isinstance(v, int) or isinstance(v, bool):
                if isinstance(v, sympy.Basic) and v.is_Integer:
                    return int(v)
                raise UnsupportedOpError(f"{n.target} at {source_line(n)}: expected a constant int, got {v!r}")
            return v
        if kind == "float":
            return float(v)
        if kind == "bool":
            return bool(v)
        if kind == "str":
            return str(v)
        raise AssertionError(kind)

    def promoted(self, op: str, operands: list[Any], result: TensorType, n: torch.fx.Node) -> list[Any]:
        """`operands` with torch's type promotion made explicit: where operands that the declaration
        types alike (one dtype variable `T`) hold different float dtypes (T5's norm multiplies float64
        activations by a float32 rsqrt), each one is cast to the dtype torch computes in, the result's
        (or the promoted one where the result is not a float, as for a comparison). The IR's ops stay
        single-dtype, and the cast is an explicit node that a verification in another dtype can retype."""
        decl = self.rules.ops.get(op)
        if decl is None:
            return operands
        probe = Node("_", op, list(operands), {}, result)
        try:
            groups = _operand_groups(decl, probe)
        except Exception:  # an arity the checker reports with its own message
            return operands
        out = list(operands)
        for positions in groups.values():
            dtypes = {i: self.operand_dtype(out[i]) for i in positions}
            floats = {d for d in dtypes.values() if d in FLOAT_DTYPES}
            if len(floats) < 2:
                continue
            goal = result.dtype if result.dtype in floats else DTYPE_NAMES[_promoted_dtype(floats)]
            for i, d in dtypes.items():
                if d in FLOAT_DTYPES and d != goal:
                    src = out[i]
                    name = self.fresh(f"{src.name}_{goal}")
                    shape = self.operand_shape(src)
                    self.nodes.append(Node(name, "cast", [src], {"dtype": goal}, TensorType(goal, shape),
                                           origin=source_line(n)))
                    out[i] = ValueRef(name)
        return out

    def operand_dtype(self, o: Any) -> str | None:
        if isinstance(o, ValueRef):
            return self.value_type(o).dtype
        if isinstance(o, ParamRef):
            return self.params[o.name].dtype
        return None  # a Python number or an absent operand

    def operand_shape(self, o: Any) -> tuple:
        return self.value_type(o).shape if isinstance(o, ValueRef) else self.params[o.name].shape

    def emit_candidates(self, n: torch.fx.Node, key: str, candidates: list[tuple[Any, Any]],
                        values: list[Any]) -> ValueRef:
        """The node of the first declaration mapping this ATen op whose operand patterns and
        conditions the node meets (aten.constant_pad_nd is pad1d, pad2d or pad3d by its list's
        length). With one declaration, a node it does not accept is left to the type checker, which
        names the condition; with several, none accepting it is one line naming each one's reason."""
        if len(candidates) == 1:
            decl, mapping = candidates[0]
            return self.emit_mapped(n, decl, mapping, values)
        from ..ir.checker import infer_node
        from ..ir.shape_functions import ShapeError
        from ..lang.evaluate import EvalError

        env = {name: t for name, t in self.inputs}
        env.update({node.name: node.type for node in self.nodes})
        reasons = []
        for decl, mapping in candidates:
            mark = (len(self.nodes), dict(self.params), dict(self.weights), set(self.buffers), set(self.used_names))
            ref = self.emit_mapped(n, decl, mapping, values)
            node = self.nodes[-1]
            try:
                got = infer_node(decl, node, {**env, **{m.name: m.type for m in self.nodes[mark[0]:-1]}}, self.params)
                if got == node.type:
                    return ref
                reasons.append(f"{decl.name}: gives {got}, the model computes {node.type}")
            except (ShapeError, EvalError) as e:
                reasons.append(f"{decl.name}: {e}")
            # not this declaration: forget the node and anything registered for it
            del self.nodes[mark[0]:]
            self.params, self.weights, self.buffers, self.used_names = mark[1], mark[2], mark[3], mark[4]
        raise UnsupportedOpError(f"unsupported {key} at {source_line(n)}: no declaration accepts it ({'; '.join(reasons)})")

    def emit_mapped(self, n: torch.fx.Node, decl: Any, mapping: Any, values: list[Any]) -> ValueRef:
        bound: dict[str, Any] = {}
        for name, v in zip(mapping.args, values):
            if name is not None:
                bound[name] = v
        given = {tp.name: [self.operand(x, n) for x in (bound.get(tp.name) or [])] if tp.variadic
                 else self.operand(bound.get(tp.name), n, _reads_by_broadcast(decl, tp)) for tp in decl.tensor_params}
        operands = decl.operands_in_order(given)
        # an ATen argument left None (aten.pad's value) means the op's default, which the declaration states
        attrs = {a.name: self.attr(bound[a.name], a.kind, n) for a in decl.attr_params
                 if a.name in bound and not (bound[a.name] is None and a.has_default and a.default is not None)}
        return self.add_node(decl.name, operands, attrs, n)

    def add_node(self, op: str, operands: list[Any], attrs: dict[str, Any], n: torch.fx.Node, val: Any = None) -> ValueRef:
        t = self.ttype(val if val is not None else n.meta["val"], n)
        operands = self.promoted(op, operands, t, n)
        name = self.fresh(n.name)
        self.nodes.append(Node(name, op, operands, attrs, t, origin=source_line(n)))
        return ValueRef(name)


def _operand_groups(decl: Any, node: Node) -> dict[str, list[int]]:
    """The positions of a node's operands grouped by the dtype variable their pattern declares
    (`T`: every operand of `add`, `x` and `weight` of `linear`)."""
    from ..ir.checker import bind_operands

    groups: dict[str, list[int]] = {}
    for i, (tp, o) in enumerate(bind_operands(decl, node)):
        var = tp.pattern.dtype
        if len(var) != 1 or not var.isupper() or var in ("I", "M") or o is None:
            continue  # a fixed dtype, integer indices, an attention mask (bool or additive), or absent
        # a variadic parameter is the last one and takes the operands from its position on
        groups.setdefault(var, []).extend(range(i, len(node.operands)) if tp.variadic else [i])
    return groups


def aten_candidates(rules: RuleSet) -> dict[str, list[tuple[Any, Any]]]:
    """Every declaration that maps each ATen op, in file order (several may: the lowering picks by
    their conditions, see `_Lowering.emit_candidates`)."""
    out: dict[str, list[tuple[Any, Any]]] = {}
    for decl in rules.ops.values():
        for m in decl.aten:
            out.setdefault(m.target, []).append((decl, m))
    return out


def normalize_args(n: torch.fx.Node) -> list[Any]:
    """Positional arguments in schema order, keyword arguments and defaults filled in."""
    target = n.target
    if not isinstance(target, torch._ops.OpOverload):
        return list(n.args)
    out: list[Any] = []
    for i, a in enumerate(target._schema.arguments):
        if i < len(n.args) and not a.kwarg_only:
            out.append(n.args[i])
        elif a.name in n.kwargs:
            out.append(n.kwargs[a.name])
        elif a.has_default_value():
            out.append(a.default_value)
        else:
            out.append(None)
    return out


def _reads_by_broadcast(decl: Any, tp: Any) -> bool:
    """Whether an op reads operand `tp` by broadcasting: its pattern is one variadic run of dims that no
    other operand and no result pattern names (`add`'s operands under `shape broadcast`, an attention
    mask `M[*K]`)."""
    dims = tp.pattern.dims
    if len(dims) != 1 or not isinstance(dims[0], tuple):
        return False
    run = dims[0]
    others = [p.pattern for p in decl.tensor_params if p is not tp]
    if any(run in p.dims for p in others):
        return False
    if isinstance(decl.result, str):
        return decl.result == "broadcast"
    return run not in decl.result.dims


def _promoted_dtype(dtypes: set[str]) -> torch.dtype:
    from ..ir.types import DTYPES

    out = None
    for d in sorted(dtypes):
        out = DTYPES[d] if out is None else torch.promote_types(out, DTYPES[d])
    assert out is not None
    return out


def _has_sym(values: Any) -> bool:
    return any(isinstance(v, sympy.Basic) and not v.is_Integer for v in _flatten(values))


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [y for z in x for y in _flatten(z)]
    return [x]


Handler = Callable[[_Lowering, torch.fx.Node, list[Any]], Any]
