"""Emit a Program as a readable, self-contained PyTorch module.

Each node becomes one line of `forward`, rendered from its op's `torch` template in rules/. Parameters
keep their original dotted names as state_dict keys (containers are created for the prefixes), so a
minimized model's state_dict reads like the original's. Helper functions used by templates (`P.name`)
are copied from prelude/pytorch.py (and sr_ir/nn/functional.py) into the generated source.
"""
from __future__ import annotations

import ast
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
from ..ir.program import ParamRef, Program, ValueRef
from ..ir.types import dim_str
from ..lang.loader import RuleSet, default_rules
from ..resources import prelude_sources

_P_CALL = re.compile(r"\bP\.([A-Za-z_][A-Za-z0-9_]*)")


def _ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not s or s[0].isdigit() or keyword.iskeyword(s):
        s = "v_" + s
    return s


# names the generated module defines at its top level: a model class of one of them would hide it
_MODULE_NAMES = frozenset({"torch", "F", "nn", "P"})


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


def emit_source(program: Program, rules: RuleSet | None = None, class_name: str | None = None) -> str:
    """The Python source of an nn.Module computing `program` (parameters created empty, loaded later)."""
    rules = rules or default_rules()
    cls = class_name or _class_name(program.name)
    names: dict[str, str] = {}
    used: set[str] = {"self", "torch", "F", "nn", "P"}

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
    params_local: dict[str, str] = {}
    for pname in program.params:
        params_local[pname] = local("p_" + pname.replace(".", "_"))

    def render_operand(o: Any) -> str:
        if isinstance(o, ValueRef):
            return local(o.name)
        if isinstance(o, ParamRef):
            return params_local[o.name]
        if o is None:
            return "None"
        return format_attr(o) if not isinstance(o, float) else repr(o)

    def render_attr(v: Any) -> str:
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(render_attr(x) for x in v) + "]"
        if isinstance(v, bool) or v is None:
            return repr(v)
        if isinstance(v, float):
            return repr(v) if v == v and v not in (float("inf"), float("-inf")) else f"float({str(v)!r})"
        if isinstance(v, (int, str)):
            return repr(v)
        text = dim_str(v)
        return text if v.is_Symbol else "(" + text + ")"  # symbolic dim: the symbols are bound from the input shapes

    for node in program.nodes:
        decl = rules.ops.get(node.op)
        if decl is None or decl.torch is None:
            raise SrIrError(f"op {node.op!r} has no torch emission template in rules/", node.loc)
        fields: dict[str, str] = {}
        for tp, o in bind_operands(decl, node):
            fields[tp.name] = ", ".join(render_operand(x) for x in o) if tp.variadic else render_operand(o)
        for k, v in attrs_with_defaults(decl, node).items():
            fields[k] = render_attr(v)
        try:
            expr = decl.torch.format(**fields)
        except KeyError as e:
            raise SrIrError(f"torch template of {node.op!r} names unknown field {e}", decl.loc) from None
        helpers.update(_P_CALL.findall(expr))
        origin = f"  # {node.origin}" if node.origin and node.origin.startswith("<") is False and False else ""
        body.append(f"        {local(node.name)} = {expr}{origin}")
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
        "",
        "",
    ]
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
    for pname, t in program.params.items():
        parts = pname.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix not in containers:
                containers.add(prefix)
                parent = ".".join(parts[: i - 1])
                lines.append(f"        {_access(parent) if parent else 'self'}.add_module({parts[i - 1]!r}, nn.Module())")
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


def load_source(source: str, class_name: str, module_name: str | None = None) -> type[nn.Module]:
    """Execute generated source as a real module (registered in linecache so tracebacks and
    torch.compile can read it) and return the model class."""
    digest = hashlib.sha1(source.encode()).hexdigest()[:12]
    module_name = module_name or f"sr_ir_generated_{digest}"
    filename = f"<sr-ir generated {module_name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    mod = types.ModuleType(module_name)
    mod.__file__ = filename
    sys.modules[module_name] = mod
    exec(compile(source, filename, "exec"), mod.__dict__)
    return getattr(mod, class_name)


def emit(program: Program, rules: RuleSet | None = None, class_name: str | None = None) -> nn.Module:
    """An nn.Module computing `program`, with its weights loaded. `module.sr_ir_source` holds the code;
    `module.sr_ir_program` the program without weights, from which `sr_ir.lower` reads the module back
    (its ops, such as compensated norms, are not ATen ops torch.export could give back)."""
    cls_name = class_name or _class_name(program.name)
    source = emit_source(program, rules, cls_name)
    cls = load_source(source, cls_name)
    module = cls()
    missing = [n for n in program.params if n not in program.weights]
    if missing:
        raise SrIrError(f"cannot emit a runnable module: no weights for {', '.join(missing[:5])}")
    with torch.no_grad():
        module.load_state_dict({n: program.weights[n] for n in program.params}, strict=True)
    module.sr_ir_source = source
    module.sr_ir_program = program.copy(weights=False)
    return module.eval()
