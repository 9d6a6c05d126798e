"""The scalar-function vocabulary: `function` and `axiom` items of rule files (docs/rules.md, section 2).

    function gelu(x)
      means x * (1 + erf(x / sqrt(2))) / 2
      torch "F.gelu({x})"

    axiom gelu_zero: gelu(0) == 0

A function is what `means`, rules and axioms may call by name besides the language's built-ins. Its
`means` (optional) is its exact definition in terms of numbers, `max`/`min` and other functions;
its `torch` spelling is a template over its parameters, evaluated on float64 tensors wherever a
function is computed on numbers (`torch_function`). The prover keeps functions uninterpreted: what
a proof may use about one are the axioms the rule names, read by their form (`classify`), never by
their name. `sr-ir prove --axioms` checks each axiom against the definitions.

This module is plain data plus the one template evaluator; it imports torch only when a template
is evaluated, so loading rules and checking certificates stays solver- and torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from fractions import Fraction
from typing import Any, Callable, Iterable, Mapping, Union

from ..errors import Loc, TypeCheckError
from . import ast as A

# Calls that are part of the language itself (`sum`, `max`, ...) may not be declared as functions.
# These two are scalar built-ins a function's `means` may use.
SCALAR_BUILTINS = ("max", "min")

# Axioms the prover implements in Python because they are about the language's `softmax(...)`, not
# a scalar function (their encodings are z3 instances over whole rows and row-shaped stand-ins). They
# are still declared in a rule file (`builtin axiom NAME: STATEMENT`) so that rules name them like any
# other axiom and `--axioms` validates them; the declared statement must read as given here, since
# that is what the Python encoding implements.
BUILTIN_AXIOMS = {
    "softmax_rows": "not (exists t < s: keep[t] != 0) or sum(j < s, softmax(t < s, score[t], keep[t], j)) == 1",
    "softmax_shift": "softmax(t < s, score[t] + d, keep[t], j) == softmax(t < s, score[t], keep[t], j)",
}


@dataclass(frozen=True)
class FunctionDecl:
    """`function NAME(params) [means EXPR] [torch "TEMPLATE"]`."""

    name: str
    params: tuple[str, ...]
    means: A.Expr | None = None
    torch: str | None = None
    loc: Loc | None = field(default=None, compare=False)

    def text(self) -> str:
        """Normalised declaration (no comments, no positions): what certificates hash."""
        out = f"function {self.name}({', '.join(self.params)})"
        if self.means is not None:
            out += f" means {A.show(self.means)}"
        if self.torch is not None:
            out += f" torch {self.torch!r}"
        return out


# ---- axiom forms: what the prover can use, recognised from the statement ----------------------------
@dataclass(frozen=True)
class Pin:
    """`f(c, x, ...) == v`: a value at a point; each argument a number or a variable (any value)."""

    fn: str
    args: tuple[Union[Fraction, str], ...]
    value: Fraction

    def matches(self, consts: list[Fraction | None]) -> bool:
        """Do arguments (None where not a known number) hit this pin?"""
        return len(consts) == len(self.args) and all(
            isinstance(p, str) or (c is not None and c == p) for p, c in zip(self.args, consts))


@dataclass(frozen=True)
class Bound:
    """`f(a, ...) > v` (or >=, <, <=) for all arguments."""

    fn: str
    arity: int
    op: str  # f(...) OP value
    value: Fraction

    @property
    def lower(self) -> bool:
        return self.op in (">", ">=")

    @property
    def strict(self) -> bool:
        return self.op in (">", "<")


@dataclass(frozen=True)
class Homomorphism:
    """`f(a + b) == f(a) * f(b)`: sums in the argument become products."""

    fn: str


@dataclass(frozen=True)
class Definition:
    """`f(x, ...) == expr`: calls of f unfold to its definition (the arguments distinct variables, the
    body free of f). What a raise needs that equates a written-out formula with the function."""

    fn: str
    params: tuple[str, ...]
    body: Any


@dataclass(frozen=True)
class BuiltinForm:
    """One of BUILTIN_AXIOMS (implemented by the prover in Python)."""

    name: str


AxiomForm = Union[Pin, Bound, Homomorphism, Definition, BuiltinForm]


@dataclass(frozen=True)
class AxiomDecl:
    """`axiom ID: STATEMENT` (or `builtin axiom ID: STATEMENT`)."""

    id: str
    statement: A.Cond
    form: AxiomForm
    functions: tuple[str, ...]  # what it is about: the functions its statement calls
    builtin: bool = False
    loc: Loc | None = field(default=None, compare=False)

    def text(self) -> str:
        """Normalised statement: what certificates hash."""
        return f"{'builtin ' if self.builtin else ''}axiom {self.id}: {A.show(self.statement)}"


@dataclass
class Vocabulary:
    """The declared functions and axioms of a rule set (shared by its rules)."""

    functions: dict[str, FunctionDecl] = field(default_factory=dict)
    axioms: dict[str, AxiomDecl] = field(default_factory=dict)

    def about(self, fn: str) -> list[AxiomDecl]:
        """The declared axioms about a function (in declaration order)."""
        return [a for a in self.axioms.values() if fn in a.functions]

    def closure(self, names: Iterable[str]) -> list[str]:
        """`names` that are declared functions, plus every function their `means` call, transitively."""
        out: list[str] = []
        todo = [n for n in names if n in self.functions]
        while todo:
            n = todo.pop()
            if n in out:
                continue
            out.append(n)
            m = self.functions[n].means
            if m is not None:
                todo += [c for c in calls(m) if c in self.functions]
        return sorted(out)


def calls(tree: Any) -> list[str]:
    """Names called anywhere in a tree, in order, without repeats."""
    out: list[str] = []
    for sub in A.walk(tree):
        if isinstance(sub, A.Call) and sub.fn not in out:
            out.append(sub.fn)
    return out


# ---- classification ------------------------------------------------------------------------------------
def const_value(e: Any) -> Fraction | None:
    """A number written with + - * / and parentheses, exactly; None when `e` is not one."""
    if isinstance(e, A.Num) and isinstance(e.value, (int, float)) and not isinstance(e.value, bool):
        return Fraction(str(e.value)) if isinstance(e.value, float) else Fraction(e.value)
    if isinstance(e, A.Neg):
        v = const_value(e.operand)
        return None if v is None else -v
    if isinstance(e, A.BinOp) and e.op in "+-*/":
        a, b = const_value(e.left), const_value(e.right)
        if a is None or b is None:
            return None
        if e.op == "/":
            return a / b if b else None
        return a + b if e.op == "+" else a - b if e.op == "-" else a * b
    return None


_FLIP = {">": "<", ">=": "<=", "<": ">", "<=": ">="}

SUPPORTED_FORMS = ("a value at a point `f(0) == 0` (arguments numbers or variables), a bound `f(a) > 0` "
                   "(>=, <, <= too), the homomorphism `f(a + b) == f(a) * f(b)`, or a definition "
                   "`f(x) == <expression in x>`")


def classify(axiom_id: str, statement: Any, functions: Mapping[str, FunctionDecl], loc: Loc | None) -> AxiomForm:
    """The form of a scalar axiom's statement; TypeCheckError (at `loc`) for any other form."""

    def err(msg: str) -> TypeCheckError:
        return TypeCheckError(f"axiom {axiom_id!r}: {msg}", loc)

    if not isinstance(statement, A.Cmp):
        raise err(f"unsupported statement `{A.show(statement)}`; supported: {SUPPORTED_FORMS}")
    left, op, right = statement.left, statement.op, statement.right
    if not isinstance(left, A.Call) and isinstance(right, A.Call):
        left, right, op = right, left, _FLIP.get(op, op)
    if not isinstance(left, A.Call) or left.fn not in functions:
        raise err(f"unsupported statement `{A.show(statement)}`: one side must call a declared function; "
                  f"supported: {SUPPORTED_FORMS}")
    fn = left.fn
    decl = functions[fn]
    if len(left.args) != len(decl.params):
        raise err(f"{fn} takes {len(decl.params)} argument(s), the statement gives {len(left.args)}")
    value = const_value(right)
    if op == "==" and value is not None:  # a value at a point
        args: list[Fraction | str] = []
        for a in left.args:
            c = const_value(a)
            if c is not None:
                args.append(c)
            elif isinstance(a, A.Name) and a.id not in args:
                args.append(a.id)
            else:
                raise err(f"in a value `{A.show(statement)}` each argument is a number or a distinct variable")
        return Pin(fn, tuple(args), value)
    if op in _FLIP and value is not None:  # a bound over all arguments
        names = [a.id for a in left.args if isinstance(a, A.Name)]
        if len(names) != len(left.args) or len(set(names)) != len(names):
            raise err(f"a bound `{A.show(statement)}` holds for all arguments: write them as distinct variables")
        return Bound(fn, len(names), op, value)
    if op == "==" and _is_homomorphism(fn, left, right):
        return Homomorphism(fn)
    if op == "==" and all(isinstance(a, A.Name) for a in left.args) \
            and len({a.id for a in left.args}) == len(left.args):
        params = tuple(a.id for a in left.args)
        free = {x.id for x in A.walk(right) if isinstance(x, A.Name)}
        calls = {x.fn for x in A.walk(right) if isinstance(x, A.Call)}
        if free <= set(params) and fn not in calls:
            return Definition(fn, params, right)
    raise err(f"unsupported statement `{A.show(statement)}`; supported: {SUPPORTED_FORMS}")


def _is_homomorphism(fn: str, left: A.Call, right: Any) -> bool:
    if len(left.args) != 1 or not (isinstance(left.args[0], A.BinOp) and left.args[0].op == "+"):
        return False
    s = left.args[0]
    if not (isinstance(s.left, A.Name) and isinstance(s.right, A.Name) and s.left != s.right):
        return False
    if not (isinstance(right, A.BinOp) and right.op == "*"):
        return False
    got = {right.left, right.right}
    return got == {A.Call(fn, (s.left,)), A.Call(fn, (s.right,))}


# ---- evaluation on tensors -------------------------------------------------------------------------------
def torch_namespace() -> dict[str, Any]:
    """The names a function's torch template may use (those of op templates: torch, F)."""
    import torch
    import torch.nn.functional as F

    return {"torch": torch, "F": F}


@lru_cache(maxsize=None)
def torch_function(decl: FunctionDecl) -> Callable[..., Any]:
    """The function as a callable on tensors, through its torch template: `torch_function(relu)(k)`.

    Arguments are bound to the template's parameters in order (give float64 tensors; a number is made
    a 0-d float64 tensor). The template is compiled once per declaration (the callable is cached)."""
    if decl.torch is None:
        raise TypeCheckError(f"function {decl.name!r} has no torch spelling", decl.loc)
    slots = {p: f"_arg{i}" for i, p in enumerate(decl.params)}
    code = compile(decl.torch.format(**slots), f"<sr-ir function {decl.name}>", "eval")
    ns = torch_namespace()
    torch = ns["torch"]
    n = len(decl.params)
    name = decl.name

    def fn(*args: Any) -> Any:
        if len(args) != n:
            raise TypeError(f"{name} takes {n} argument(s), got {len(args)}")
        env = dict(ns)
        for i, a in enumerate(args):
            env[f"_arg{i}"] = a if isinstance(a, torch.Tensor) else torch.tensor(float(a), dtype=torch.float64)
        with torch.no_grad():
            return eval(code, env)  # noqa: S307 - a template of a rule file, its parameters bound by name

    fn.__name__ = name
    fn.__qualname__ = f"torch_function({name})"
    return fn


def function_table(rs: Any) -> dict[str, Any]:
    """A rule set's scalar functions as torch callables (their declared torch spellings), for
    evaluating rule expressions such as `relu(k)` on tensors."""
    return {name: torch_function(d) for name, d in rs.functions.items() if d.torch is not None}
