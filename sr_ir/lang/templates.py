"""What a `torch "..."` template of a rule file may say, checked when the rule file is loaded.

A template is Python text that the emitter writes into generated modules and that the engine, the
prover's replays and `torch_function` evaluate. It is checked statically (no torch import, nothing
run) to be ONE Python expression over its `{field}` placeholders (the op's declared operands and
attributes, a function's parameters) and the members of a fixed set of namespaces the evaluators
provide (`torch`, `torch.linalg`, ..., `F` = torch.nn.functional, and for ops `P`, the prelude
helpers). Methods and properties of values (`{x}.permute(...)`) are allowed; builtins, lambdas,
comprehensions, f-strings, walrus, dunder or private attributes, calls of anything that is neither a
namespace member nor a method, and members that reach files, processes or global state are not.
Anything else is a ParseError at the template's file:line:col.

This keeps a mistyped or mutated template from loading (and from running later); a rule directory is
still code its user chose to load (docs/rules.md, "Trust").
"""
from __future__ import annotations

import ast
import string
from functools import lru_cache
from dataclasses import dataclass
from typing import Collection, Iterable

from ..errors import Loc, ParseError
from ..resources import prelude_sources

# The namespaces an op template may read members of (a dotted prefix, then exactly one member), as the
# emitter (`import torch`, `import torch.nn.functional as F`, class P) and sr_ir.backend.run provide them.
OP_NAMESPACES = ("torch", "torch.linalg", "torch.special", "torch.fft", "torch.ops.aten", "F", "P")
# sr_ir.lang.functions.torch_namespace: a function's torch spelling has no prelude
FUNCTION_NAMESPACES = tuple(n for n in OP_NAMESPACES if n != "P")

# Members of those namespaces, and method names, that read or write files, run or compile code, load
# libraries, change process-wide state, or leave the tensor world for objects that can (numpy arrays
# write files, `str.format` reads attributes): never needed to compute a tensor.
DENIED_NAMES = frozenset({
    # files, pickles, compiled code, libraries
    "load", "save", "from_file", "tofile", "fromfile", "dump", "dumps", "loads", "open", "write",
    "compile", "import_ir_module", "import_ir_module_from_buffer", "get_file_path", "load_library",
    "system", "popen", "exec", "eval", "run", "spawn",
    # process-wide state
    "manual_seed", "seed", "use_deterministic_algorithms",
    # callables, hooks and raw memory
    "apply_", "map_", "map2_", "register_hook", "register_post_accumulate_grad_hook", "storage",
    "untyped_storage", "share_memory_", "numpy", "format", "format_map",
    # modules reachable as members (torch.os, F.torch, ...): a module is no value a template computes with
    "os", "sys", "builtins", "importlib", "ctypes", "inspect", "glob", "platform", "subprocess", "signal",
    "threading", "multiprocessing", "hub", "jit", "utils", "package", "serialization", "library", "classes",
    "ops", "distributed", "backends", "compiler", "export", "fx", "cpp", "testing", "torch", "np",
    # introspection of frames and classes
    "mro", "gi_frame", "gi_code", "cr_frame", "ag_frame", "f_globals", "f_locals", "f_builtins", "f_back",
    "f_code", "tb_frame", "func_globals",
})
_DENIED_PREFIXES = ("set_",)

# Python syntax a template may use: one expression of arithmetic, comparisons, conditionals, calls,
# attributes, subscripts and list/tuple displays
_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.keyword,
    ast.Attribute, ast.Name, ast.Constant, ast.List, ast.Tuple, ast.Subscript, ast.Slice, ast.Load,
    ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)
_WHY = {
    ast.Lambda: "a lambda", ast.NamedExpr: "an assignment expression (:=)", ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a comprehension", ast.Dict: "a dict display",
    ast.Set: "a set display", ast.Starred: "a starred argument", ast.Await: "await", ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


@dataclass(frozen=True)
class Template:
    """A template's Python text with its fields replaced by stand-in names, and where each came from."""

    source: str
    fields: dict[str, str]  # stand-in name -> field name
    spans: tuple[tuple[int, int, int, bool], ...]  # (offset in source, in template, length in source, a field?)


def check_template(template: str, fields: Collection[str], where: Loc | None, what: str,
                   namespaces: Iterable[str] = OP_NAMESPACES, variadic: Collection[str] = (),
                   raw: str | None = None, fields_are: str = "a declared operand or attribute",
                   kind: str = "torch") -> ast.Expression:
    """Raise ParseError unless `template` is one Python expression over `fields` (`{name}`) and the
    members of `namespaces`. `where` is the place of the template's string literal, `raw` that literal
    as written (when it has no escapes, the error points at the offending column inside it);
    `variadic` are fields that stand for several operands (allowed only as items of a list); `kind` names
    the clause in messages (`torch`, `module`)."""
    def at(offset: int) -> Loc | None:
        if where is None or raw is None or "\\" in raw:
            return where
        return Loc(where.file, where.line, where.col + 1 + offset)

    t = _substitute(template, set(fields), what, at, fields_are, kind)
    try:
        tree = ast.parse(t.source, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        offset = _syntax_offset(t.source, e)
        raise ParseError(f"{what}: {kind} template is not one Python expression "
                         f"({getattr(e, 'msg', None) or type(e).__name__})", at(_template_offset(t, offset))) from None
    _Checker(t, tuple(namespaces), set(variadic), what, at, kind).check(tree)
    return tree


def _substitute(template: str, fields: set[str], what: str, at, fields_are: str, kind: str = "torch") -> Template:
    """The template as Python text, each `{name}` field replaced by a stand-in identifier."""
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError as e:  # a single `{` or `}`
        raise ParseError(f"{what}: {kind} template: {e} (a field is `{{name}}`; braces are balanced)",
                         at(_brace_offset(template))) from None
    literal = "".join(p[0] for p in pieces)
    stem = "_f"
    while stem in literal:  # stand-ins no literal part of the template can spell
        stem += "_"
    out, names, spans = [], {}, []
    src_pos = tpl_pos = 0
    for text, field, spec, conv in pieces:
        out.append(text)
        spans.append((src_pos, tpl_pos, len(text), False))
        src_pos += len(text)
        tpl_pos += len(text)
        if field is None:
            continue
        written = "{" + field + ("!" + conv if conv else "") + (":" + spec if spec else "") + "}"
        if not field.isidentifier() or conv or spec:
            raise ParseError(f"{what}: {kind} template field {written!r} is not `{{name}}` (no index, attribute, "
                             f"conversion or format spec)", at(template.find(written, tpl_pos)))
        if field not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise ParseError(f"{what}: {kind} template uses {{{field}}}, which is not {fields_are} ({known})",
                             at(tpl_pos))
        stand_in = f"{stem}{len(names)}"
        names[stand_in] = field
        out.append(stand_in)
        spans.append((src_pos, tpl_pos, len(stand_in), True))
        src_pos += len(stand_in)
        tpl_pos += len(written)
    return Template("".join(out), names, tuple(spans))


def _brace_offset(template: str) -> int:
    """Where the first unbalanced brace is (the column Python's formatter does not report)."""
    i, depth, opened = 0, 0, 0
    while i < len(template):
        ch = template[i]
        if ch in "{}" and template[i:i + 2] == ch * 2 and depth == 0:
            i += 2
            continue
        if ch == "{":
            if depth:
                return i
            depth, opened = 1, i
        elif ch == "}":
            if not depth:
                return i
            depth = 0
        i += 1
    return opened if depth else 0


def _syntax_offset(source: str, e: BaseException) -> int:
    line, col = getattr(e, "lineno", None), getattr(e, "offset", None)
    if not line or not col:
        return 0
    lines = source.splitlines(keepends=True)
    return sum(len(x) for x in lines[:line - 1]) + col - 1


def _template_offset(t: Template, offset: int) -> int:
    """The template offset of a Python-source offset (inside a stand-in: its field's `{`)."""
    for src, tpl, n, is_field in reversed(t.spans):
        if src <= offset:
            return tpl if is_field else tpl + min(offset - src, n)
    return 0


class _Checker:
    """Walks a template's syntax tree; the first thing a template may not say is a ParseError."""

    def __init__(self, t: Template, namespaces: tuple[str, ...], variadic: set[str], what: str, at,
                 kind: str = "torch"):
        self.t, self.namespaces, self.variadic, self.what, self.at = t, namespaces, variadic, what, at
        self.kind = kind
        self.roots = {n.split(".")[0] for n in namespaces}

    def error(self, node: ast.AST, msg: str, tail: int = 0) -> ParseError:
        """ParseError at `node` (with `tail`: that many characters before its end, an attribute's `.name`)."""
        lines = self.t.source.splitlines(keepends=True)
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0)
        if tail:
            line, col = getattr(node, "end_lineno", line), getattr(node, "end_col_offset", col) - tail
        prefix = lines[line - 1].encode()[:col].decode(errors="replace") if line <= len(lines) else ""
        offset = sum(len(x) for x in lines[:line - 1]) + len(prefix)
        return ParseError(f"{self.what}: {self.kind} template may not {msg}", self.at(_template_offset(self.t, offset)))

    def check(self, tree: ast.Expression) -> None:
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED_NODES):
                raise self.error(node, f"contain {_WHY.get(type(node), type(node).__name__)} (it is one "
                                       f"expression over its fields and {', '.join(self.namespaces)})")
            if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, complex, str, type(None), type(...))):
                raise self.error(node, f"contain the constant {node.value!r}")
        self._expr(tree.body, parent=None)

    def _expr(self, node: ast.AST, parent: ast.AST | None) -> None:
        if isinstance(node, ast.Name):
            self._name(node, parent)
        elif isinstance(node, ast.Attribute):
            self._attribute(node)
        elif isinstance(node, ast.Call):
            self._call(node)
        else:
            for child in ast.iter_child_nodes(node):
                self._expr(child, node)

    def _name(self, node: ast.Name, parent: ast.AST | None) -> None:
        field = self.t.fields.get(node.id)
        if field is None:
            hint = (f"; {node.id} is only read through its members ({node.id}.name)" if node.id in self.roots
                    else "")
            raise self.error(node, f"name {node.id!r}: a template reads its fields ({{name}}) and members of "
                                   f"{', '.join(self.namespaces)}{hint}")
        if field in self.variadic and not isinstance(parent, (ast.List, ast.Tuple)):
            raise self.error(node, f"use {{{field}}} outside a list: it stands for several operands "
                                   f"(write [{{{field}}}])")

    def _attribute(self, node: ast.Attribute) -> None:
        path = _dotted(node)
        if path is not None and path[0] in self.roots:
            self._member(node, path)
            return
        self._expr(node.value, node)
        self._attr_name(node, node.attr)

    def _member(self, node: ast.AST, path: list[str]) -> None:
        """`ns.member`: exactly one member of a namespace (a namespace itself is no value)."""
        dotted = ".".join(path)
        ns = max((n for n in self.namespaces if dotted.startswith(n + ".")), key=len, default=None)
        if ns is None or len(path) != ns.count(".") + 2:
            raise self.error(node, f"read {dotted}: a template reads members of {', '.join(self.namespaces)}, "
                                   f"one level deep")
        member = path[-1]
        self._attr_name(node, member)
        if ns == "P" and member not in prelude_sources():
            raise self.error(node, f"call P.{member}: no prelude helper of that name "
                                   f"({', '.join(sorted(prelude_sources()))})")

    def _attr_name(self, node: ast.AST, name: str) -> None:
        if name.startswith("_"):
            raise self.error(node, f"read the private or dunder attribute {name!r}", len(name) + 1)
        if name in DENIED_NAMES or name.startswith(_DENIED_PREFIXES):
            raise self.error(node, f"use {name!r} (it reaches files, code or process state, not tensors)",
                             len(name) + 1)

    def _call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Attribute):
            f = node.func
            what = (f"{{{self.t.fields[f.id]}}}" if isinstance(f, ast.Name) and f.id in self.t.fields
                    else repr(f.id) if isinstance(f, ast.Name) else "the result of an expression")
            raise self.error(node, f"call {what}: it calls members of {', '.join(self.namespaces)} and methods "
                                   f"of values")
        self._expr(node.func, node)
        for a in node.args:
            self._expr(a, node)
        for k in node.keywords:
            if k.arg is None:
                raise self.error(node, "pass **keyword arguments")
            self._expr(k.value, node)


def _dotted(node: ast.AST) -> list[str] | None:
    """`a.b.c` as ['a', 'b', 'c'] when the chain starts at a name, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


# ---- `module "..." holds ...`: the torch.nn layer an op's node may be emitted as ---------------------
# The namespaces a module template reads: torch.nn (`nn.Linear`), the package's own layers (`SN` =
# sr_ir.nn, `SN.FixedCompensatedLayerNorm`) and torch (dtypes). The emitter's generated source
# imports them under these names.
MODULE_NAMESPACES = ("torch", "nn", "SN")
# the classes a module template may construct live in these namespaces
_LAYER_NAMESPACES = ("nn", "SN")


def module_template_fields(decl) -> list[str]:
    """The fields a module template of `decl` may use: its attributes, the dim names and runs its
    operand patterns bind, `has_<operand>` for each optional operand, and `dtype` (the torch dtype of the
    layer's state)."""
    from . import ast as A

    fields = [a.name for a in decl.attr_params]
    for t in decl.tensor_params:
        for d in t.pattern.dims:
            name = d.name if isinstance(d, A.Variadic) else d.id if isinstance(d, A.Name) else None
            if name is not None and name not in fields:
                fields.append(name)
    fields += [f"has_{t.name}" for t in decl.tensor_params if t.optional]
    return fields + ["dtype"]


def check_module_template(decl, template: str, holds: Collection[str], where: Loc | None,
                          raw: str | None = None) -> None:
    """Raise ParseError unless `template` is one call of a layer class (`nn.X(...)`, `SN.X(...)`) over
    the fields `module_template_fields(decl)` gives, and `holds` names distinct, non-variadic tensor
    operands of `decl` (the layer's state; the others are its call's arguments)."""
    what = f"op {decl.name!r}"
    params = {t.name: t for t in decl.tensor_params}
    seen: set[str] = set()
    for h in holds:
        if h not in params:
            raise ParseError(f"{what}: module template holds {h!r}, which is not a tensor operand "
                             f"({', '.join(params) or 'none'})", where)
        if params[h].variadic:
            raise ParseError(f"{what}: module template holds {h!r}, a variadic operand (a layer's state is "
                             f"named tensors)", where)
        if h in seen:
            raise ParseError(f"{what}: module template holds {h!r} twice", where)
        seen.add(h)
    fields = module_template_fields(decl)
    clash = sorted({f for f in fields if fields.count(f) > 1})
    if clash:  # `dtype` and `has_<operand>` are the clause's own fields
        raise ParseError(f"{what}: module template field {{{clash[0]}}} would mean two things (an attribute or "
                         f"dim, and the clause's own field); rename the attribute", where)
    if len(seen) == len(params):
        raise ParseError(f"{what}: module template holds every operand (the layer is called with at least "
                         f"one)", where)
    tree = check_template(template, fields, where, what, MODULE_NAMESPACES, (), raw,
                          "an attribute, a dim of an operand pattern, has_<optional operand> or dtype",
                          kind="module")
    body = tree.body
    path = _dotted(body.func) if isinstance(body, ast.Call) else None
    if path is None or len(path) != 2 or path[0] not in _LAYER_NAMESPACES:
        raise ParseError(f"{what}: module template is one constructor call, nn.Layer(...) or SN.Layer(...)",
                         where)
    if path[0] == "SN" and path[1] not in package_layers():
        raise ParseError(f"{what}: module template constructs SN.{path[1]}: sr_ir.nn has no layer of that "
                         f"name ({', '.join(sorted(package_layers()))})", where)


@lru_cache(maxsize=1)
def package_layers() -> frozenset[str]:
    """The layer classes sr_ir.nn exports (read from its __init__ without importing torch)."""
    from ..resources import _PACKAGE

    tree = ast.parse((_PACKAGE / "nn" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            names = ast.literal_eval(node.value)
            return frozenset(n for n in names if n[:1].isupper())
    return frozenset()
