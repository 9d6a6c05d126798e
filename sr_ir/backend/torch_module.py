"""Emit a Program as a readable, self-contained PyTorch module.

Each node becomes one line of `forward`. A node whose op declares a layer (`module "nn.Linear(...)"
holds weight, bias` in rules/ops) and whose held operands are the parameters `<prefix>.weight`,
`<prefix>.bias`, ... of that node alone becomes a child `<prefix>` of that layer type, called in
`forward`; every other node is rendered from its op's `torch` template. Parameters keep their original
dotted names as state_dict keys either way (containers are created for the other prefixes), so a
minimized model's state_dict reads like the original's and `module.sr_ir_names` maps each original
parameter name to its key. Helper functions used by templates (`P.name`) are copied from
prelude/pytorch.py (and sr_ir/nn/functional.py) into the generated source.

An emitted module pickles (`torch.save(module)`, `copy.deepcopy`) by its generated source: unpickling
calls `rebuild_generated(source, class_name)`, which re-creates the class in a process that has sr-ir.
"""
from __future__ import annotations

import ast
import copy
import hashlib
import keyword
import linecache
import re
import sys
import types
from typing import Any

import torch
from torch import nn

from ..errors import SrIrError
from ..ir.checker import attrs_with_defaults, bind_operands
from ..ir.printer import format_attr
from ..ir.opdecl import OpDecl
from ..ir.program import Node, ParamRef, Program, ValueRef
from ..ir.types import TensorType, dim_str
from ..lang.loader import RuleSet, default_rules
from ..resources import prelude_sources

_P_CALL = re.compile(r"\bP\.([A-Za-z_][A-Za-z0-9_]*)")


def _ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not s or s[0].isdigit() or keyword.iskeyword(s):
        s = "v_" + s
    return s


# names the generated module defines at its top level: a model class of one of them would hide it
_MODULE_NAMES = frozenset({"torch", "F", "nn", "P", "SN"})


def _class_name(name: str) -> str:
    cls = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]", name) if part) or "Model"
    if cls[0].isdigit():
        return "Model" + cls
    return cls + "Model" if cls in _MODULE_NAMES or keyword.iskeyword(cls) else cls  # `None`, `True`


def _access(path: str) -> str:
    """`self.a.b` for the module path `a.b`; a component that is not a plain ASCII identifier (`block1-0`,
    a keyword, a name Python would NFKC-normalise) is read with getattr."""
    expr = "self"
    for part in path.split("."):
        plain = part.isascii() and part.isidentifier() and not keyword.iskeyword(part)
        expr = f"{expr}.{part}" if plain else f"getattr({expr}, {part!r})"
    return expr



def _render_attr(v: Any, seq: str = "[]") -> str:
    """An attribute as Python text; `seq` brackets lists ("()" in a layer's constructor, where torch.nn
    stores sizes as tuples)."""
    if isinstance(v, (list, tuple)):
        items = [_render_attr(x, seq) for x in v]
        if seq == "()":
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(v, bool) or v is None:
        return repr(v)
    if isinstance(v, float):
        return repr(v) if v == v and v not in (float("inf"), float("-inf")) else f"float({str(v)!r})"
    if isinstance(v, (int, str)):
        return repr(v)
    text = dim_str(v)
    return text if v.is_Symbol else "(" + text + ")"  # symbolic dim: the symbols are bound from the input shapes


class _Layer:
    """A node emitted as a child layer: where it lives, how it is built, what it is called with."""

    def __init__(self, prefix: str, ctor: str, args: list[Any], held: dict[str, str]):
        self.prefix = prefix  # module path of the child (`layer1.0.conv1`)
        self.ctor = ctor  # the op's module template, filled in (`nn.Conv2d(3, 8, (3, 3), ...)`)
        self.args = args  # the operands the layer is called with, in declaration order
        self.held = held  # program parameter -> the layer's attribute holding it


def _dims_of(decl: OpDecl, node: Node, types: dict[str, TensorType], params: dict[str, TensorType]) -> dict[str, Any]:
    """The concrete dims (and runs of dims) the node's operands bind to the names of the op's patterns;
    a symbolic dim (the batch) is left out: no layer's constructor can take it."""
    from ..lang import ast as A

    out: dict[str, Any] = {}
    for tp, o in bind_operands(decl, node):
        t = types.get(o.name) if isinstance(o, ValueRef) else params.get(o.name) if isinstance(o, ParamRef) else None
        if tp.variadic or t is None:
            continue
        runs = [d for d in tp.pattern.dims if isinstance(d, A.Variadic)]
        if len(runs) > 1 or t.rank < len(tp.pattern.dims) - len(runs):
            continue
        shape, i = list(t.shape), 0
        for d in tp.pattern.dims:
            if isinstance(d, A.Variadic):
                n = t.rank - (len(tp.pattern.dims) - 1)
                run = shape[i:i + n]
                if all(isinstance(x, int) for x in run):
                    out.setdefault(d.name, tuple(run))
                i += n
                continue
            if isinstance(d, A.Name) and isinstance(shape[i], int):
                out.setdefault(d.id, shape[i])
            i += 1
    return out


_LAYER_STATE: dict[str, Any] = {}


def _layer_state(ctor: str) -> dict[str, tuple[tuple[int, ...], torch.dtype, bool]] | None:
    """name -> (shape, dtype, is a Parameter) of what the layer `ctor` builds holds in its state dict,
    built on the meta device (no memory, no initialisation); None when it cannot be built. The text is a
    module template of a loaded rule file, filled in with numbers: checked at load to be one constructor
    call of a torch.nn or sr_ir.nn layer (sr_ir.lang.templates)."""
    if ctor not in _LAYER_STATE:
        from .. import nn as SN

        try:
            with torch.device("meta"):
                layer = eval(compile(ctor, "<sr-ir module template>", "eval"),
                             {"__builtins__": {}, "torch": torch, "nn": nn, "SN": SN})
            state = {k: (tuple(v.shape), v.dtype, k in dict(layer.named_parameters()))
                     for k, v in layer.state_dict(keep_vars=True).items()}
        except Exception:  # arguments the layer refuses (a kernel it does not take, ...): the functional form
            state = None
        _LAYER_STATE[ctor] = state
    return _LAYER_STATE[ctor]


def _as_layer(node: Node, decl: OpDecl, program: Program, types: dict[str, TensorType],
              uses: dict[str, int], claimed: set[str]) -> _Layer | None:
    """The child layer `node` becomes by its op's module template, or None (then the functional form):
    every held operand present is a parameter `<prefix>.<operand>` (one prefix) that no other node
    reads, the prefix holds no other tensor, and the layer the template builds holds exactly those
    tensors, of the same shapes, dtypes and kinds (parameter or buffer)."""
    tpl = decl.module
    assert tpl is not None
    pairs = bind_operands(decl, node)
    held = {tp.name: o for tp, o in pairs if tp.name in tpl.holds and o is not None}
    args = [o for tp, o in pairs if tp.name not in tpl.holds]
    if not held or any(o is None for o in args) or any(not isinstance(o, ParamRef) for o in held.values()):
        return None
    prefixes = {o.name.rpartition(".")[0] for o in held.values()}
    prefix = prefixes.pop() if len(prefixes) == 1 else ""
    if not prefix or prefix in claimed or any(o.name != f"{prefix}.{k}" for k, o in held.items()):
        return None
    if any(uses.get(o.name, 0) != 1 for o in held.values()):
        return None
    under = {n for n in program.params if n.startswith(prefix + ".")}
    if under != {o.name for o in held.values()}:
        return None
    dtypes = {program.params[o.name].torch_dtype for o in held.values()}
    if len(dtypes) != 1:
        return None
    fields: dict[str, str] = {k: _render_attr(v, "()") for k, v in _dims_of(decl, node, types, program.params).items()}
    fields.update({k: _render_attr(v, "()") for k, v in attrs_with_defaults(decl, node).items()})
    fields.update({f"has_{tp.name}": repr(o is not None) for tp, o in pairs if tp.optional})
    fields["dtype"] = str(dtypes.pop())  # `torch.float64`
    try:
        ctor = tpl.text.format(**fields)
    except KeyError:  # a dim the template names is symbolic in this program
        return None
    state = _layer_state(ctor)
    if state is None or set(state) != set(held):
        return None
    for k, o in held.items():
        t = program.params[o.name]
        is_param = o.name not in program.buffers and t.torch_dtype.is_floating_point
        if state[k] != (tuple(t.shape), t.torch_dtype, is_param):
            return None
    return _Layer(prefix, ctor, args, {o.name: k for k, o in held.items()})


def emit_source(program: Program, rules: RuleSet | None = None, class_name: str | None = None,
                layers: bool = True, standalone: bool = False) -> str:
    """The Python source of an nn.Module computing `program` (parameters created empty, loaded later).
    `layers=False`: every node in its functional form (no op's module template used). `standalone`:
    source that imports torch only (no sr_ir.nn layer; those nodes in the functional form). The
    state_dict keys are the program's parameter names in every form."""
    rules = rules or default_rules()
    cls = class_name or _class_name(program.name)
    names: dict[str, str] = {}
    used: set[str] = {"self", "torch", "F", "nn", "P", "SN"}

    def local(v: str) -> str:
        if v not in names:
            base = _ident(v)
            n, i = base, 1
            while n in used:
                n, i = f"{base}_{i}", i + 1
            used.add(n)
            names[v] = n
        return names[v]

    body: list[str] = []
    helpers: set[str] = set()
    symbols: dict[str, str] = {}
    for name, t in program.inputs:
        for axis, d in enumerate(t.shape):
            if not isinstance(d, int) and d.is_Symbol and str(d) not in symbols:
                symbols[str(d)] = f"{local(name)}.shape[{axis}]"

    # which nodes become layers (decided before any local name is taken, so that names stay as before)
    types = program.value_types()
    uses: dict[str, int] = {}
    for node in program.nodes:
        for o in node.operands:
            for x in (o if isinstance(o, (list, tuple)) else [o]):
                if isinstance(x, ParamRef):
                    uses[x.name] = uses.get(x.name, 0) + 1
    node_layers: dict[int, _Layer] = {}
    for i, node in enumerate(program.nodes):
        decl = rules.ops.get(node.op)
        if (layers and decl is not None and decl.module is not None
                and not (standalone and re.match(r"\s*SN\.", decl.module.text))):
            layer = _as_layer(node, decl, program, types, uses, {l.prefix for l in node_layers.values()})
            if layer is not None:
                node_layers[i] = layer
    in_layer = {p: l for l in node_layers.values() for p in l.held}

    params_local: dict[str, str] = {}
    for pname in program.params:
        if pname not in in_layer:
            params_local[pname] = local("p_" + pname.replace(".", "_"))

    def render_operand(o: Any) -> str:
        if isinstance(o, ValueRef):
            return local(o.name)
        if isinstance(o, ParamRef):
            return params_local[o.name]
        if o is None:
            return "None"
        if isinstance(o, float):  # a scalar operand: inf and nan are no Python literals
            return _render_attr(o)
        return format_attr(o)

    for i, node in enumerate(program.nodes):
        decl = rules.ops.get(node.op)
        if i in node_layers:
            layer = node_layers[i]
            body.append(f"        {local(node.name)} = {_access(layer.prefix)}"
                        f"({', '.join(render_operand(o) for o in layer.args)})")
            continue
        if decl is None or decl.torch is None:
            raise SrIrError(f"op {node.op!r} has no torch emission template in rules/", node.loc)
        fields: dict[str, str] = {}
        for tp, o in bind_operands(decl, node):
            fields[tp.name] = ", ".join(render_operand(x) for x in o) if tp.variadic else render_operand(o)
        for k, v in attrs_with_defaults(decl, node).items():
            fields[k] = _render_attr(v)
        try:
            expr = decl.torch.format(**fields)
        except KeyError as e:
            raise SrIrError(f"torch template of {node.op!r} names unknown field {e}", decl.loc) from None
        helpers.update(_P_CALL.findall(expr))
        body.append(f"        {local(node.name)} = {expr}")
    outs = [local(o) for o in program.outputs]
    ret = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ("," if len(outs) == 1 else "") + ")"

    prelude = prelude_sources()
    missing = sorted(h for h in helpers if h not in prelude)
    if missing:
        raise SrIrError(f"emission helpers not found in the prelude: {', '.join(missing)}")
    lines = [
        f'"""Generated by sr-ir from graph {program.name!r}. Parameters: {program.param_count():,}."""',
        "import torch",
        "import torch.nn.functional as F",
        "from torch import nn",
    ]
    if any(re.match(r"\s*SN\.", l.ctor) for l in node_layers.values()):
        lines.append("import sr_ir.nn as SN  # the exact layers of sr-ir (compensated norms, frozen batch norm)")
    lines += ["", ""]
    if helpers:
        lines.append("class P:")
        lines.append('    """Helpers the forward calls (copied from sr-ir so that this file stands alone)."""')
        for h in sorted(helpers):
            lines.append("")
            lines.append("    @staticmethod")
            lines.extend("    " + ln if ln else "" for ln in prelude[h].splitlines())
        lines += ["", ""]
    lines.append(f"class {cls}(nn.Module):")
    lines.append("    def __init__(self):")
    lines.append("        super().__init__()")
    containers: set[str] = set()

    def container(path: str) -> None:
        """Create the nn.Module containers down to `path` (its parents first)."""
        parts = path.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix not in containers:
                containers.add(prefix)
                parent = ".".join(parts[: i - 1])
                lines.append(f"        {_access(parent) if parent else 'self'}.add_module({parts[i - 1]!r}, nn.Module())")

    built: set[str] = set()
    for pname, t in program.params.items():
        parts = pname.split(".")
        layer = in_layer.get(pname)
        if layer is not None:
            if layer.prefix not in built:  # the layer, at its first parameter's place
                built.add(layer.prefix)
                parent, _, last = layer.prefix.rpartition(".")
                if parent:
                    container(parent)
                containers.add(layer.prefix)
                owner = _access(parent) if parent else "self"
                plain = last.isascii() and last.isidentifier() and not keyword.iskeyword(last)
                lines.append(f"        {owner}.{last} = {layer.ctor}" if plain
                             else f"        {owner}.add_module({last!r}, {layer.ctor})")
            continue
        if len(parts) > 1:
            container(".".join(parts[:-1]))
        owner = _access(".".join(parts[:-1])) if len(parts) > 1 else "self"
        empty = f"torch.empty({list(t.shape)}, dtype={t.torch_dtype})"
        if pname in program.buffers or not t.torch_dtype.is_floating_point:
            lines.append(f"        {owner}.register_buffer({parts[-1]!r}, {empty})")
        else:
            lines.append(f"        {owner}.register_parameter({parts[-1]!r}, nn.Parameter({empty}))")
    if not program.params:
        lines.append("        pass")
    lines.append("")
    args = ", ".join(local(n) for n, _ in program.inputs)
    lines.append(f"    def forward(self, {args}):")
    for pname, loc in params_local.items():
        lines.append(f"        {loc} = {_access(pname)}")
    body_text = "\n".join(body)
    for sym, expr in symbols.items():
        if re.search(rf"\b{re.escape(sym)}\b", body_text):
            lines.append(f"        {sym} = {expr}")
    lines.extend(body)
    lines.append(f"        return {ret}")
    return "\n".join(lines) + "\n"


def _module_name(source: str) -> str:
    return f"sr_ir_generated_{hashlib.sha1(source.encode()).hexdigest()[:12]}"


def load_source(source: str, class_name: str, module_name: str | None = None) -> type[nn.Module]:
    """Execute generated source as a real module (registered in linecache so tracebacks and
    torch.compile can read it) and return the model class, which pickles by its source (see
    `rebuild_generated`). A source loaded before in this process gives the class it gave then."""
    module_name = module_name or _module_name(source)
    known = sys.modules.get(module_name)
    if known is not None and known.__dict__.get("__sr_ir_source__") == source:
        cls = known.__dict__.get(class_name)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls  # the same source was loaded before: one class per source and process
    filename = f"<sr-ir generated {module_name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    mod = types.ModuleType(module_name)
    mod.__file__ = filename
    mod.__dict__["__sr_ir_source__"] = source
    sys.modules[module_name] = mod
    exec(compile(source, filename, "exec"), mod.__dict__)
    cls = getattr(mod, class_name)
    cls.__reduce__ = _reduce_generated
    cls.__deepcopy__ = _deepcopy_generated
    return cls


def _reduce_generated(self: nn.Module) -> tuple[Any, ...]:
    """Pickle an emitted module as (its class's source, the class name) plus its __dict__, as the default
    reduction would but with the class found by `rebuild_generated` instead of by import (a generated
    module name is not importable in another process). copy.deepcopy goes through here too."""
    cls = type(self)
    source = sys.modules[cls.__module__].__dict__["__sr_ir_source__"]
    return rebuild_generated, (source, cls.__qualname__), _state(self)


def _state(module: nn.Module) -> dict[str, Any]:
    """What a copy or a pickle carries: all but the rule set, which is the loaded declarations, not
    state (another process has its own, a copy shares this one)."""
    return {k: v for k, v in module.__dict__.items() if k != "sr_ir_rules"}


def _deepcopy_generated(self: nn.Module, memo: dict[int, Any]) -> nn.Module:
    """A deep copy that shares the rule set it was emitted with (immutable once loaded, and large)."""
    rules = self.__dict__.get("sr_ir_rules")
    copy_ = type(self).__new__(type(self))
    memo[id(self)] = copy_
    copy_.__dict__.update(copy.deepcopy(_state(self), memo))
    if "sr_ir_rules" in self.__dict__:
        copy_.__dict__["sr_ir_rules"] = rules
    return copy_


def rebuild_generated(source: str, class_name: str) -> nn.Module:
    """An empty instance of the class `class_name` that `source` (emitted by sr-ir) defines, its state to
    be set by the unpickler. The pickle entry point of emitted modules: `torch.load(path,
    weights_only=False)` of a saved one calls it (and so runs the stored source, as loading any pickled
    module runs code: load only files you trust). The class is made once per source and process."""
    cls = load_source(source, class_name)
    return cls.__new__(cls)


def _held(t: torch.Tensor, dtype: torch.dtype, share: bool) -> torch.Tensor:
    """The tensor the emitted module holds for a program weight `t` declared `dtype`: `t` itself (its
    storage, detached) when sharing and it already fits, else a contiguous copy in `dtype`."""
    t = t.detach()
    if share and t.dtype == dtype and t.is_contiguous():
        return t
    return t.to(dtype).clone(memory_format=torch.contiguous_format)


def emit(program: Program, rules: RuleSet | None = None, class_name: str | None = None,
         layers: bool = True, *, share_weights: bool = False) -> nn.Module:
    """An nn.Module computing `program`, with its weights loaded. `module.sr_ir_source` holds the code;
    `module.sr_ir_program` the program without weights, from which `sr_ir.lower` reads the module back
    (its ops, such as compensated norms, are not ATen ops torch.export could give back);
    `module.sr_ir_names` maps each of the program's (the original model's) parameter names to its
    state_dict key; `module.sr_ir_rules` is the rule set it was emitted with (None: the bundled one). `layers=False`: every node in its functional form.

    The module pickles (`torch.save(module)`, then `torch.load(path, weights_only=False)` in a process
    with sr-ir) and deep-copies.

    >>> import torch, sr_ir
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    >>> module = sr_ir.emit(sr_ir.lower(net, (torch.randn(2, 4),)))
    >>> module
    Sequential(
      (0): Linear(in_features=4, out_features=3, bias=True)
    )
    >>> x = torch.randn(5, 4)
    >>> bool(torch.equal(module(x), net(x)))
    True

    `share_weights`: the module's tensors are the program's own where they already have the declared
    dtype and a contiguous layout (no copy; training the module changes `program.weights` too), copies
    elsewhere. Off by default, because a lowered program's weights are the user's model's storage:
    `minimize` shares only after giving its result program tensors of its own."""
    cls_name = class_name or _class_name(program.name)
    source = emit_source(program, rules, cls_name, layers)
    cls = load_source(source, cls_name)
    missing = [n for n in program.params if n not in program.weights]
    if missing:
        raise SrIrError(f"cannot emit a runnable module: no weights for {', '.join(missing[:5])}")
    # built on the meta device and given the program's tensors (copies): no memory or time for an
    # initialisation the weights would overwrite, and the global random state left as it was
    with torch.device("meta"):
        module = cls()
    weights = {n: _held(program.weights[n], t.torch_dtype, share_weights) for n, t in program.params.items()}
    try:
        module.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        raise SrIrError(f"emitted module does not take the program's weights: {str(e).splitlines()[-1].strip()}") from None
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise SrIrError(f"emitted module holds tensors the program has no weights for: {', '.join(left[:5])}")
    module.sr_ir_source = source
    module.sr_ir_program = program.copy(weights=False)
    module.sr_ir_names = {n: n for n in program.params}
    module.sr_ir_rules = rules  # the declarations its source came from (a user's ops too), to emit it again
    return module.eval()
