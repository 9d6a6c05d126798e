"""Read rule files (grammar/rules.lark) into op declarations, scalar functions and axioms
(sr_ir.lang.functions) and rules (sr_ir.lang.rule).

Errors carry file:line:col. Files are read in sorted order, directories recursively; a later
directory may not redeclare an op, a function, an axiom or a rule an earlier one declared. Names are
resolved once everything is read (so a rule may use an op, a function or an axiom declared in another
file or directory): every function called must be declared, every axiom a rule names must be.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import lark

from ..errors import Loc, ParseError, TypeCheckError
from ..ir.opdecl import AtenMapping, AttrParam, ModuleTemplate, OpDecl, TensorParam, TensorPattern
from ..resources import data_dir, grammar_path
from ..syntax import parsing, read_source
from . import ast as A
from . import functions as Fn
from . import rule as R
from .kinds import check_means
from .recurrence import Recurrence, check_recurrence
from .templates import FUNCTION_NAMESPACES, OP_NAMESPACES, check_module_template, check_template


INT_MAX = 2**63 - 1  # integers of rule files are int64 where they end up (dims, attributes, indices)


@lru_cache(maxsize=1)
def rules_parser() -> lark.Lark:
    return lark.Lark(
        grammar_path("rules.lark").read_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
    )


class ExprBuilder(lark.Transformer):
    """Builds expression and condition trees; subclasses add the top-level items."""

    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename
        self.call_sites: list[tuple[str, Loc]] = []  # every call, in file order (for error positions)

    def loc(self, meta: Any) -> Loc:
        return Loc(self.filename, getattr(meta, "line", 0) or 0, getattr(meta, "column", 0) or 0)

    def num(self, a):
        s = str(a[0])
        if s.isdigit() and int(s) > INT_MAX:  # no dim, attribute or index of a tensor is that large
            raise ParseError(f"integer {s} is out of range (at most {INT_MAX}; write a float, e.g. 1e20)",
                             Loc(self.filename, a[0].line, a[0].column))
        return A.Num(int(s) if s.isdigit() else float(s))

    def negnum(self, a):
        v = self.num(a).value
        return A.Num(-v)

    def name(self, a):
        n = str(a[0])
        if n in ("true", "false"):
            return A.Num(n == "true")
        if n == "none":
            return A.Num(None)
        return A.Name(n)

    def add(self, a):
        return A.BinOp("+", a[0], a[1])

    def sub(self, a):
        return A.BinOp("-", a[0], a[1])

    def mul(self, a):
        return A.BinOp("*", a[0], a[1])

    def div(self, a):
        return A.BinOp("/", a[0], a[1])

    def floordiv(self, a):
        return A.BinOp("//", a[0], a[1])

    def mod(self, a):
        return A.BinOp("%", a[0], a[1])

    def pow(self, a):
        return A.BinOp("^", a[0], a[1])

    def neg(self, a):
        return A.Neg(a[0])

    def full_slice(self, _):
        return A.Slice()

    def variadic(self, a):
        return A.Variadic(str(a[0]))

    def indexed(self, a):
        return A.Index(str(a[0]), tuple(a[1:]))

    def bound(self, a):
        return A.Bound(str(a[0]), a[1])

    @lark.v_args(meta=True)
    def call(self, meta, a):
        self.call_sites.append((str(a[0]), self.loc(meta)))
        return A.Call(str(a[0]), tuple(x for x in a[1:] if x is not None))

    def list_expr(self, a):
        return A.ListExpr(tuple(x for x in a if x is not None))

    def cmp(self, a):
        return A.Cmp(str(a[1]), a[0], a[2])

    def and_(self, a):
        return A.BoolOp("and", (a[0], a[1]))

    def or_(self, a):
        return A.BoolOp("or", (a[0], a[1]))

    def not_(self, a):
        return A.BoolOp("not", (a[0],))

    def index_eq(self, a):
        return A.IndexEq(a[0], a[1])

    def forall_(self, a):
        return A.Quant("forall", str(a[0]), a[1], a[2])

    def exists_(self, a):
        return A.Quant("exists", str(a[0]), a[1], a[2])

    # literals used as attribute defaults
    def str_lit(self, a):
        return A.Num(json.loads(str(a[0])))

    def true_lit(self, _):
        return A.Num(True)

    def false_lit(self, _):
        return A.Num(False)

    def none_lit(self, _):
        return A.Num(None)

    def list_lit(self, a):
        return A.Num([x.value for x in a if x is not None])


class _DeclBuilder(ExprBuilder):
    def tensor_pattern(self, a):
        return TensorPattern(str(a[0]), [x for x in a[1:] if x is not None])

    def tensor_param(self, a):
        flags = {t.type for t in a[2:] if isinstance(t, lark.Token)}
        return TensorParam(str(a[0]), a[1], "OPTIONAL" in flags, "SCALAR" in flags, "VARIADIC" in flags)

    def attr_param(self, a):
        name, kind = str(a[0]), str(a[1])
        rest = [x for x in a[2:] if x is not None]
        optional = any(isinstance(x, lark.Token) and x.type == "OPTIONAL" for x in rest)
        defaults = [x for x in rest if isinstance(x, A.Num)]
        return AttrParam(name, kind, optional, defaults[0].value if defaults else None, bool(defaults))

    def pattern_result(self, a):
        return a[0]

    def shape_fn_result(self, a):
        return str(a[0])

    def where_clause(self, a):
        return ("where", list(a))

    def aten_skip(self, _):
        return None

    def aten_arg(self, a):
        return str(a[0])

    def aten_clause(self, a):
        return ("aten", AtenMapping(str(a[0]), [x for x in a[1:]]))

    def torch_clause(self, a):
        return ("torch", self.template(a[0]))

    def module_clause(self, a):
        return ("module", (self.template(a[0]), tuple(str(x) for x in a[1:])))

    def template(self, token: lark.Token) -> _Template:
        """A `torch "..."` string: its text, where it was written and how (checked by the item)."""
        return _Template(json.loads(str(token)), Loc(self.filename, token.line, token.column), str(token))

    def means_clause(self, a):
        return ("means", list(a))

    def carry_clause(self, a):
        return ("carry", list(a))

    def step_clause(self, a):
        return ("step", (str(a[0]), a[1]))

    @lark.v_args(meta=True)
    def op_decl(self, meta, a):
        name = str(a[0])
        params = []
        i = 1
        while i < len(a) and isinstance(a[i], (TensorParam, AttrParam)):
            params.append(a[i])
            i += 1
        result = a[i]
        decl = OpDecl(
            name,
            [p for p in params if isinstance(p, TensorParam)],
            [p for p in params if isinstance(p, AttrParam)],
            result,
            loc=self.loc(meta),
        )
        carries: list[Any] = []
        step: tuple[str, Any] | None = None
        for clause in a[i + 1 :]:
            kind, body = clause
            if kind == "carry":
                carries.extend(body)
            elif kind == "step":
                if step is not None:
                    raise ParseError(f"op {name!r} has two `step` clauses", decl.loc)
                step = body
            elif kind == "where":
                decl.where.extend(body)
            elif kind == "aten":
                decl.aten.append(body)
            elif kind == "torch":
                if decl.torch is not None:
                    raise ParseError(f"op {name!r} has two torch mappings", decl.loc)
                body.check(f"op {name!r}", decl.param_names, [t.name for t in decl.tensor_params if t.variadic])
                decl.torch = body.text
            elif kind == "means":
                decl.means.extend(body)
            elif kind == "module":
                if decl.module is not None:
                    raise ParseError(f"op {name!r} has two module clauses", decl.loc)
                tpl, holds = body
                check_module_template(decl, tpl.text, holds, tpl.loc, tpl.raw)
                decl.module = ModuleTemplate(tpl.text, holds, tpl.loc)
        if carries and step is None:
            raise ParseError(f"op {name!r}: `carry` without `step` (a recurrence names its step index)", decl.loc)
        if step is not None:
            decl.recurrence = Recurrence(step[0], step[1], tuple(carries))
        return decl


    @lark.v_args(meta=True)
    def semantics_decl(self, meta, a):
        return SemanticsDecl(str(a[0]), list(a[1:]), self.loc(meta))

    # ---- functions and axioms ------------------------------------------------------------------
    def function_means(self, a):
        return ("means", a[0])

    def function_torch(self, a):
        return ("torch", self.template(a[0]))

    @lark.v_args(meta=True)
    def function_decl(self, meta, a):
        loc = self.loc(meta)
        name = str(a[0])
        params = [str(x) for x in a[1:] if isinstance(x, lark.Token)]
        means = torch = None
        for x in a[1:]:
            if not isinstance(x, tuple):
                continue
            kind, body = x
            if kind == "means":
                if means is not None:
                    raise ParseError(f"function {name!r} has two `means` clauses", loc)
                means = body
            else:
                if torch is not None:
                    raise ParseError(f"function {name!r} has two torch spellings", loc)
                torch = body
        if len(set(params)) != len(params):
            raise ParseError(f"function {name!r}: a parameter is named twice", loc)
        if torch is not None:
            torch.check(f"function {name!r}", params, namespaces=FUNCTION_NAMESPACES, fields_are="a parameter")
            torch = torch.text
        return Fn.FunctionDecl(name, tuple(params), means, torch, loc)

    @lark.v_args(meta=True)
    def axiom_decl(self, meta, a):
        builtin = isinstance(a[0], lark.Token) and a[0].type == "BUILTIN"
        rest = a[1:] if builtin else a
        return _AxiomItem(str(rest[0]), rest[1], builtin, self.loc(meta))

    # ---- rules ------------------------------------------------------------------------------
    def shape_ann(self, a):
        return tuple(x for x in a if x is not None)

    def bind_operand(self, a):
        return ("operand", str(a[0]), a[1] if len(a) > 1 else None)

    def bind_run(self, a):
        return ("run", str(a[0]), a[2] if len(a) > 2 else None)

    def spread(self, a):
        return A.Spread(str(a[0]))

    def bind_attr(self, a):
        return ("attr", str(a[0]), a[1])

    def bind_none(self, _):
        return ("operand", None, None)

    @lark.v_args(meta=True)
    def binding(self, meta, a):
        result = str(a[0])
        i = 1
        result_shape = None
        if isinstance(a[i], tuple) and not isinstance(a[i], lark.Token) and a[i] and a[i][0] not in ("operand", "attr"):
            result_shape = a[i]
            i += 1
        elif isinstance(a[i], tuple) and not a[i]:
            result_shape = ()
            i += 1
        op = str(a[i])
        args = [x for x in a[i + 1 :] if x is not None]
        return (result, result_shape, op, args, self.loc(meta))

    def match_clause(self, a):
        return ("match", list(a))

    @lark.v_args(meta=True)
    def wcond(self, meta, a):
        return (a[0], self.loc(meta))

    def rwhere_clause(self, a):
        return ("where", list(a))

    def unused_cond(self, a):
        return A.Unused(a[0])

    def forward_concl(self, a):
        if str(a[1]) != "==":
            raise ParseError(f"a forward fact is `tensor[...] == value`, not {str(a[1])!r}")
        if not isinstance(a[0], A.Index):
            raise ParseError("a forward fact's left side is an indexed tensor, e.g. y[*B, c]")
        return ("then", R.ForwardFact(a[0], a[2]))

    def backward_concl(self, a):
        return ("then", R.BackwardFact(tuple(a)))

    def rewrite_concl(self, a):
        return ("then", R.Rewrite(a[0], a[1]))

    def then_clause(self, a):
        return a[0]

    def axioms_clause(self, a):
        return ("axioms", [(str(x), Loc(self.filename, x.line, x.column)) for x in a])

    def doc_clause(self, a):
        return ("doc", json.loads(str(a[0])))

    @lark.v_args(meta=True)
    def rule_decl(self, meta, a):
        name = str(a[0])
        loc = self.loc(meta)
        bindings: list[R.Binding] = []
        where: list[Any] = []
        where_locs: list[Any] = []
        conclusion = None
        axioms: list[str] = []
        axiom_locs: list[Loc] = []
        doc = ""
        for kind, body in a[1:]:
            if kind == "match":
                if bindings:
                    raise ParseError(f"rule {name!r} has two match clauses (chain bindings with ';')", loc)
                for result, rshape, op, args, bloc in body:
                    bindings.append(self._binding(name, result, rshape, op, args, bloc))
            elif kind == "where":
                for c, cl in body:
                    where.append(c)
                    where_locs.append(cl)
            elif kind == "then":
                if conclusion is not None:
                    raise ParseError(f"rule {name!r} has two `then` clauses", loc)
                conclusion = body
            elif kind == "axioms":
                axioms += [n for n, _ in body]
                axiom_locs += [al for _, al in body]
            elif kind == "doc":
                doc = body
        if not bindings:
            raise ParseError(f"rule {name!r} has no `match` clause", loc)
        if conclusion is None:
            raise ParseError(f"rule {name!r} has no `then` clause", loc)
        return R.Rule(name, tuple(bindings), tuple(where), conclusion, tuple(axioms), doc, None, loc,
                      tuple(where_locs), axiom_locs=tuple(axiom_locs))

    def _binding(self, rule, result, rshape, op, args, loc) -> R.Binding:
        operands = []
        attrs = []
        for kind, n, v in args:
            if kind in ("operand", "run"):
                if attrs:
                    raise ParseError(f"rule {rule!r}: operands come before attributes in `{op}(...)`", loc)
                operands.append((n, v, kind == "run"))
            else:
                attrs.append((n, v))
        # parameter names are filled in by the loader, which knows the op's declaration
        return R.Binding(result, op, tuple(R.Operand(str(i), n, v, run) for i, (n, v, run) in enumerate(operands)),
                         tuple(attrs), rshape)


@dataclass(frozen=True)
class _Template:
    """A `torch "..."` string as read: checked (sr_ir.lang.templates) once the item's names are known."""

    text: str
    loc: Loc
    raw: str

    def check(self, what: str, fields: Iterable[str], variadic: Iterable[str] = (),
              namespaces: Iterable[str] = OP_NAMESPACES, fields_are: str = "a declared operand or attribute") -> None:
        check_template(self.text, list(fields), self.loc, what, namespaces, list(variadic), self.raw, fields_are)


@dataclass
class SemanticsDecl:
    """`semantics OP: ...`: the `means` of an op declared elsewhere."""

    op: str
    means: list[Any]
    loc: Loc


@dataclass
class _AxiomItem:
    """An `axiom` item as read; classified into an AxiomDecl once every function is known."""

    id: str
    statement: Any
    builtin: bool
    loc: Loc


@dataclass
class RuleSet:
    """Everything read from a set of rule directories."""

    ops: dict[str, OpDecl] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)  # every top-level item in file order
    files: list[Path] = field(default_factory=list)
    rules: list[R.Rule] = field(default_factory=list)  # resolved rules, in file order
    functions: dict[str, Fn.FunctionDecl] = field(default_factory=dict)
    axioms: dict[str, Fn.AxiomDecl] = field(default_factory=dict)

    @property
    def vocabulary(self) -> Fn.Vocabulary:
        """The functions and axioms (the object every rule of the set refers to)."""
        return self._vocabulary

    def __post_init__(self) -> None:
        self._vocabulary = Fn.Vocabulary(self.functions, self.axioms)

    def rule(self, name: str) -> R.Rule:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    def aten_index(self) -> dict[str, tuple[OpDecl, AtenMapping]]:
        idx: dict[str, tuple[OpDecl, AtenMapping]] = {}
        for decl in self.ops.values():
            for m in decl.aten:
                idx[m.target] = (decl, m)
        return idx


def parse_rule_text(text: str, filename: str, builder: type[ExprBuilder] = _DeclBuilder) -> list[Any]:
    return _parse(text, filename, builder)[0]


def _parse(text: str, filename: str, builder: type[ExprBuilder] = _DeclBuilder) -> tuple[list[Any], list]:
    """The items of a file and its call sites (name, loc) in file order."""
    items, sites = _parsed(text, filename, builder)
    return [_fresh(x) for x in items], list(sites)


@lru_cache(maxsize=64)
def _parsed(text: str, filename: str, builder: type[ExprBuilder]) -> tuple[tuple[Any, ...], tuple]:
    """Parsing a text is most of what loading it costs, and processes that load the same rule files
    again (tests, `--rules` runs) get the same items: parse each text once."""
    b = builder(filename)
    items = parsing(filename, lambda: b.transform(rules_parser().parse(text)).children)
    return tuple(items), tuple(b.call_sites)


def _fresh(item: Any) -> Any:
    """An item of the parse cache that the loader may complete (an op gets its `semantics`) without
    changing the cached one; everything else in an item is never changed."""
    if isinstance(item, OpDecl):
        return replace(item, tensor_params=list(item.tensor_params), attr_params=list(item.attr_params),
                       where=list(item.where), aten=list(item.aten), means=list(item.means))
    if isinstance(item, SemanticsDecl):
        return replace(item, means=list(item.means))
    return item


def rule_files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.rules")))
        elif p.is_file():
            out.append(p)
        else:
            raise ParseError(f"no such rule file or directory: {p}")
    return out


def load_rules(paths: Iterable[Path] | None = None, extra: Iterable[Path] = (), *, cache: bool = True) -> RuleSet:
    """Load the bundled rules/ (or `paths`) plus `extra` user directories (or files).

    A set loaded before from the same files (same bytes, same sr-ir) is read from the rule cache
    (sr_ir.lang.cache; SR_IR_NO_CACHE=1 turns it off) instead of being parsed and checked again.
    `cache=False`: neither read nor written (a set loaded once, like a fuzzer's mutant)."""
    base = [data_dir("rules")] if paths is None else list(paths)
    from .cache import Slot

    slot = Slot.of([Path(r) for r in [*base, *extra]], lambda r: rule_files([r]), _display) if cache else None
    cached = slot.read() if slot is not None else None
    if cached is not None:
        return cached
    rs = _load_rules(base, extra)
    if slot is not None:
        slot.write(rs)
    return rs


def check_shapes(decl: OpDecl) -> None:
    """sr_ir.lang.shapes.check_shapes, imported when first needed: it imports sympy and torch (through
    sr_ir.ir.types), which a rule set read from the cache never needs (`sr-ir prove --check` starts fast)."""
    from .shapes import check_shapes as check

    check(decl)


def _load_rules(base: list[Path], extra: Iterable[Path]) -> RuleSet:
    """Parse and check the rule files of `base` and `extra` (load_rules without the cache)."""
    rs = RuleSet()
    pending: list[R.Rule] = []
    semantics: list[SemanticsDecl] = []
    axiom_items: list[_AxiomItem] = []
    sites: dict[str, list[tuple[str, Loc]]] = {}
    for root in [*base, *extra]:
        root = Path(root)
        for f in rule_files([root]):
            rel = _display(f)
            rs.files.append(f)
            items, sites[rel] = _parse(read_source(f, rel), rel)
            for item in items:
                rs.items.append(item)
                if isinstance(item, OpDecl):
                    if item.name in rs.ops:
                        prev = rs.ops[item.name].loc
                        raise ParseError(f"op {item.name!r} declared again (first at {prev})", item.loc)
                    check_shapes(item)
                    rs.ops[item.name] = item
                elif isinstance(item, SemanticsDecl):
                    semantics.append(item)
                elif isinstance(item, Fn.FunctionDecl):
                    _declare_function(rs, item)
                elif isinstance(item, _AxiomItem):
                    if any(a.id == item.id for a in axiom_items):
                        prev = next(a.loc for a in axiom_items if a.id == item.id)
                        raise ParseError(f"axiom {item.id!r} declared again (first at {prev})", item.loc)
                    axiom_items.append(item)
                elif isinstance(item, R.Rule):
                    if any(r.name == item.name for r in pending):
                        prev = next(r.loc for r in pending if r.name == item.name)
                        raise ParseError(f"rule {item.name!r} declared again (first at {prev})", item.loc)
                    pending.append(_with_origin(item, root if root.is_dir() else root.parent))
    for sem in semantics:
        decl = rs.ops.get(sem.op)
        if decl is None:
            raise ParseError(f"semantics for unknown op {sem.op!r}", sem.loc)
        if decl.means:
            raise ParseError(f"op {sem.op!r} already has semantics (at {decl.loc})", sem.loc)
        decl.means = list(sem.means)
    _check_functions(rs, sites)
    for item in axiom_items:
        rs.axioms[item.id] = _axiom(item, rs, sites)
    for decl in rs.ops.values():
        sem = next((x for x in semantics if x.op == decl.name), None)
        what, at = (f"semantics of {decl.name!r}", sem.loc) if sem else (f"op {decl.name!r}", decl.loc)
        _check_calls(decl.means, rs, sites, at, what, scalar=True)
        check_means(decl, at, what)
        if decl.recurrence is not None:
            _check_calls([c.value for c in decl.recurrence.carries], rs, sites, at, what, scalar=True)
            check_recurrence(decl, at, what)
    for r in pending:
        rs.rules.append(resolved_rule(r, rs, sites))
    return rs


def resolved_rule(r: R.Rule, rs: RuleSet, sites: Any = None) -> R.Rule:
    """A parsed rule checked against the rule set's ops and vocabulary, its names resolved."""
    r = R.resolve(name_operands(r, rs.ops), rs.ops)
    _check_rule_vocabulary(r, rs, sites or {})
    return replace(r, functions=tuple(_functions_of(r, rs)), vocabulary=rs.vocabulary)


def _declare_function(rs: RuleSet, f: Fn.FunctionDecl) -> None:
    if f.name in rs.functions:
        raise ParseError(f"function {f.name!r} declared again (first at {rs.functions[f.name].loc})", f.loc)
    if f.name in R.BUILTINS:
        raise ParseError(f"{f.name!r} is a built-in of the rule language and cannot be declared as a function", f.loc)
    rs.functions[f.name] = f


def _site(sites: dict[str, list[tuple[str, Loc]]], name: str, after: Loc | None) -> Loc | None:
    """Where `name` is first called at or after `after` (the item that calls it) in that file."""
    if after is None:
        return None
    for n, loc in sites.get(after.file, []):
        if n == name and (loc.line, loc.col) >= (after.line, after.col):
            return loc
    return after


def _check_calls(trees: Iterable[Any], rs: RuleSet, sites, loc: Loc | None, what: str, scalar: bool,
                 allowed: Iterable[str] = ()) -> None:
    """Every name called in `trees` is a built-in, a declared function (or, outside `means`, an op)."""
    ok = set(allowed)
    for t in trees:
        for sub in A.walk(t):
            if not isinstance(sub, A.Call):
                continue
            if sub.fn in R.BUILTINS:
                why = R.builtin_misuse(sub)
                if why:
                    raise TypeCheckError(f"{what}: {why}", _site(sites, sub.fn, loc))
                continue
            if sub.fn in ok:
                continue
            if sub.fn in rs.functions:
                decl = rs.functions[sub.fn]
                n = len(sub.args)
                if n != len(decl.params) and not (not scalar and sub.fn in rs.ops):
                    raise TypeCheckError(f"{what}: {sub.fn} takes {len(decl.params)} argument(s), the call "
                                         f"`{A.show(sub)}` gives {n}", _site(sites, sub.fn, loc))
                continue
            if not scalar and sub.fn in rs.ops:
                continue
            known = list(rs.functions) + ([] if scalar else list(rs.ops))
            raise TypeCheckError(f"{what}: unknown function {sub.fn!r} (not a built-in, not declared with "
                                 f"`function`{'' if scalar else ', not an op'}){_did_you_mean(sub.fn, known)}",
                                 _site(sites, sub.fn, loc))


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, sorted(set(known)), n=3)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _check_functions(rs: RuleSet, sites) -> None:
    """Each `means` calls only built-ins and declared functions, over its parameters, without a cycle."""
    for f in rs.functions.values():
        if f.means is None:
            continue
        _check_calls([f.means], rs, sites, f.loc, f"function {f.name!r}", scalar=True, allowed=Fn.SCALAR_BUILTINS)
        for sub in A.walk(f.means):
            if isinstance(sub, A.Call) and sub.fn in R.BUILTINS and sub.fn not in Fn.SCALAR_BUILTINS:
                raise TypeCheckError(f"function {f.name!r}: `means` is a scalar expression; {sub.fn}(...) "
                                     f"is not one", _site(sites, sub.fn, f.loc))
            if isinstance(sub, (A.Index, A.Bound, A.Slice, A.Variadic, A.Spread, A.ListExpr)):
                raise TypeCheckError(f"function {f.name!r}: `means` is a scalar expression over "
                                     f"{', '.join(f.params) or 'no parameters'}; `{A.show(sub)}` is not", f.loc)
            if isinstance(sub, A.Name) and sub.id not in f.params:
                raise TypeCheckError(f"function {f.name!r}: `means` uses {sub.id!r}, which is not a parameter", f.loc)
    state: dict[str, int] = {}

    def visit(n: str, path: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cyc = path[path.index(n):] + [n]
            raise TypeCheckError(f"function {n!r} is defined in terms of itself ({' -> '.join(cyc)})",
                                 rs.functions[n].loc)
        state[n] = 1
        m = rs.functions[n].means
        for c in (Fn.calls(m) if m is not None else []):
            if c in rs.functions:
                visit(c, path + [n])
        state[n] = 2

    for n in rs.functions:
        visit(n, [])


def _axiom(item: _AxiomItem, rs: RuleSet, sites) -> Fn.AxiomDecl:
    """Check an axiom's statement and classify it (its form is what the prover uses)."""
    about = [c for c in Fn.calls(item.statement) if c not in ("sum", "max", "min")]
    if item.builtin:
        canon = Fn.BUILTIN_AXIOMS.get(item.id)
        if canon is None:
            raise TypeCheckError(f"axiom {item.id!r}: no built-in axiom of that name (the prover implements "
                                 f"{', '.join(sorted(Fn.BUILTIN_AXIOMS))}); declare it without `builtin`", item.loc)
        want = parse_rule_text(f"builtin axiom {item.id}: {canon}", "<builtin>")[0].statement
        if A.show(want) != A.show(item.statement):
            raise TypeCheckError(f"axiom {item.id!r}: the prover implements this built-in axiom as `{A.show(want)}`; "
                                 f"the declaration reads `{A.show(item.statement)}`", item.loc)
        return Fn.AxiomDecl(item.id, item.statement, Fn.BuiltinForm(item.id), tuple(about), True, item.loc)
    _check_calls([item.statement], rs, sites, item.loc, f"axiom {item.id!r}", scalar=True,
                 allowed=Fn.SCALAR_BUILTINS)
    form = Fn.classify(item.id, item.statement, rs.functions, item.loc)
    return Fn.AxiomDecl(item.id, item.statement, form, tuple(about), False, item.loc)


def _check_rule_vocabulary(r: R.Rule, rs: RuleSet, sites) -> None:
    """The rule's axioms are declared; the functions its conditions and conclusion call are."""
    for i, name in enumerate(r.axioms):
        if name not in rs.axioms:
            at = r.axiom_locs[i] if i < len(r.axiom_locs) else r.loc
            hint = _did_you_mean(name, rs.axioms) or " (`sr-ir prove --axioms` lists the declared ones)"
            raise TypeCheckError(f"rule {r.name!r}: unknown axiom {name!r}, not declared with `axiom`{hint}", at)
    trees = list(r.where) + R.conclusion_trees(r.conclusion)
    _check_calls(trees, rs, sites, r.loc, f"rule {r.name!r}", scalar=False)


def _functions_of(r: R.Rule, rs: RuleSet) -> list[str]:
    """The declared functions a rule's meaning depends on: called by the rule or by the `means` of an op
    it uses, and the functions those are defined with."""
    names: list[str] = []
    for t in list(r.where) + R.conclusion_trees(r.conclusion):
        names += Fn.calls(t)
    for op in r.ops_used:
        d = rs.ops.get(op)
        for m in d.means if d else []:
            names += Fn.calls(m)
    return rs.vocabulary.closure(names)


def _with_origin(r: R.Rule, origin: Path) -> R.Rule:
    return replace(r, origin=origin.resolve())


def name_operands(r: R.Rule, ops: dict[str, OpDecl]) -> R.Rule:
    """Positional match operands -> the op's parameter names."""
    from ..errors import TypeCheckError

    bindings = []
    for b in r.bindings:
        decl = ops.get(b.op)
        if decl is None:
            raise TypeCheckError(f"rule {r.name!r}: unknown op {b.op!r}", r.loc)
        variadic = next((i for i, t in enumerate(decl.tensor_params) if t.variadic), None)
        if len(b.operands) > len(decl.tensor_params) and variadic is None:
            raise TypeCheckError(
                f"rule {r.name!r}: {b.op} takes {len(decl.tensor_params)} tensor operands, the match gives "
                f"{len(b.operands)}", r.loc)
        ops_ = []
        for o in b.operands:
            i = int(o.param)
            if variadic is not None and i >= variadic:
                i = variadic  # every operand from the variadic parameter on is one of its operands
            elif o.run:
                raise TypeCheckError(f"rule {r.name!r}: `{o.name}...` matches a variadic operand; "
                                     f"{b.op}.{decl.tensor_params[i].name} is not one", r.loc)
            ops_.append(R.Operand(decl.tensor_params[i].name, o.name, o.shape, o.run))
        ops_ = tuple(ops_)
        bindings.append(replace(b, operands=ops_))
    return replace(r, bindings=tuple(bindings))


def _display(f: Path) -> str:
    try:
        return str(f.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(f)


_DEFAULT: RuleSet | None = None


def default_rules() -> RuleSet:
    """The bundled rule set, loaded once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_rules()
    return _DEFAULT
