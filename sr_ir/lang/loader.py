"""Read rule files (grammar/rules.lark) into op declarations and rules (sr_ir.lang.rule).

Errors carry file:line:col. Files are read in sorted order, directories recursively; a later
directory may not redeclare an op or a rule an earlier one declared. Rules are resolved against
the op declarations once everything is read (so a rule may use an op declared in another file).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import lark

from ..errors import Loc, ParseError
from ..ops.decl import AtenMapping, AttrParam, OpDecl, TensorParam, TensorPattern
from ..resources import data_dir, grammar_path
from . import ast as A
from . import rule as R


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

    def loc(self, meta: Any) -> Loc:
        return Loc(self.filename, getattr(meta, "line", 0) or 0, getattr(meta, "column", 0) or 0)

    def num(self, a):
        s = str(a[0])
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

    def call(self, a):
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
        return ("torch", json.loads(str(a[0])))

    def means_clause(self, a):
        return ("means", list(a))

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
        for clause in a[i + 1 :]:
            kind, body = clause
            if kind == "where":
                decl.where.extend(body)
            elif kind == "aten":
                decl.aten.append(body)
            elif kind == "torch":
                if decl.torch is not None:
                    raise ParseError(f"op {name!r} has two torch mappings", decl.loc)
                decl.torch = body
            elif kind == "means":
                decl.means.extend(body)
        return decl


    @lark.v_args(meta=True)
    def semantics_decl(self, meta, a):
        return SemanticsDecl(str(a[0]), list(a[1:]), self.loc(meta))

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
        return ("axioms", [str(x) for x in a])

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
                axioms += body
            elif kind == "doc":
                doc = body
        if not bindings:
            raise ParseError(f"rule {name!r} has no `match` clause", loc)
        if conclusion is None:
            raise ParseError(f"rule {name!r} has no `then` clause", loc)
        return R.Rule(name, tuple(bindings), tuple(where), conclusion, tuple(axioms), doc, None, loc,
                      tuple(where_locs))

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


@dataclass
class SemanticsDecl:
    """`semantics OP: ...`: the `means` of an op declared elsewhere."""

    op: str
    means: list[Any]
    loc: Loc


@dataclass
class RuleSet:
    """Everything read from a set of rule directories."""

    ops: dict[str, OpDecl] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)  # every top-level item in file order
    files: list[Path] = field(default_factory=list)
    rules: list[R.Rule] = field(default_factory=list)  # resolved rules, in file order

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
    try:
        tree = rules_parser().parse(text)
        return list(builder(filename).transform(tree).children)
    except lark.exceptions.UnexpectedInput as e:
        from ..ir.parser import _describe

        raise ParseError(_describe(e), Loc(filename, e.line, e.column)) from None
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, ParseError):
            err = e.orig_exc
            if err.loc is None:
                meta = getattr(e.obj, "meta", None)
                err.loc = Loc(filename, getattr(meta, "line", 0), getattr(meta, "column", 0))
            raise err from None
        meta = getattr(e.obj, "meta", None)
        raise ParseError(str(e.orig_exc), Loc(filename, getattr(meta, "line", 0), getattr(meta, "column", 0))) from None


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


def load_rules(paths: Iterable[Path] | None = None, extra: Iterable[Path] = ()) -> RuleSet:
    """Load the bundled rules/ (or `paths`) plus `extra` user directories."""
    base = [data_dir("rules")] if paths is None else list(paths)
    rs = RuleSet()
    pending: list[R.Rule] = []
    semantics: list[SemanticsDecl] = []
    for root in [*base, *extra]:
        root = Path(root)
        for f in rule_files([root]):
            rel = _display(f)
            rs.files.append(f)
            for item in parse_rule_text(f.read_text(), rel):
                rs.items.append(item)
                if isinstance(item, OpDecl):
                    if item.name in rs.ops:
                        prev = rs.ops[item.name].loc
                        raise ParseError(f"op {item.name!r} declared again (first at {prev})", item.loc)
                    rs.ops[item.name] = item
                elif isinstance(item, SemanticsDecl):
                    semantics.append(item)
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
    for r in pending:
        rs.rules.append(R.resolve(_name_operands(r, rs.ops), rs.ops))
    return rs


def _with_origin(r: R.Rule, origin: Path) -> R.Rule:
    from dataclasses import replace

    return replace(r, origin=origin.resolve())


def _name_operands(r: R.Rule, ops: dict[str, OpDecl]) -> R.Rule:
    """Positional match operands -> the op's parameter names."""
    from dataclasses import replace

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
