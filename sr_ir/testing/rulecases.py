"""Rule test cases written without Python: an input program, its weights described by directive
comments, and the minimized program expected (the way Alive2 and FileCheck test rewrites).

A case is a pair of files in a folder of cases (`tests/rulecases/<family>/`):

- `<case>.sr`: an IR program (docs/ir.md) whose weights are described by directives. A directive is a
  whole-line `#` comment, which the IR grammar ignores, so the parser reads the file as written and its
  errors point into it:

      # seed: 0                       every parameter and buffer drawn from a normal seeded by 0 and
                                      its name (a buffer named *running_var: |normal| + 0.5)
      # set: @fc1.weight[2, :] = 0    write a number into a slice of one tensor; an index entry is an
      # set: @fc1.bias[2] = 0.7       integer (negative counts from the end), `:`, or `a:b` / `a:` /
      # set: @fc2.weight[:, 1:3] = 0  `:b`; one entry per axis; no index: the whole tensor
      # rules: examples/rules_ext     an extra rule directory, relative to the repository root
      # dims: N=2, S=5                sizes of the symbolic dims for the numeric check (default 3)

  `set` directives apply in file order after the draw. A comment whose text starts with a lowercase
  word and a colon is a directive, and an unknown one is an error; other comments are plain comments.
  Errors are one line, `file:line:col: message`. Nothing in a directive is evaluated: each is matched
  by the small regular grammar below.

- `<case>.expected.sr`: the minimized program exactly as `Program.to_text()` prints it.

`check_case` parses the case, builds its weights, minimizes it with the bundled rules (plus `rules:`),
compares the printed result with the expected file (a unified diff on mismatch) and verifies the
minimized program against the original in float64 on random inputs (`sr_ir.minimization.verify`, relative
error <= 1e-12). With the environment variable `SR_IR_UPDATE_RULECASES=1` it (re)writes the expected
file instead of comparing (the numeric check still runs, so a wrong result is never recorded).
"""
from __future__ import annotations

import difflib
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import Loc, SrIrError
from ..ir.sampling import index_bound

if TYPE_CHECKING:
    import sympy

    from ..ir.program import Program
    from ..lang.loader import RuleSet
    from ..minimization.report import MinimizeReport
    from ..rewrite.rulebook import RuleBook

UPDATE_ENV = "SR_IR_UPDATE_RULECASES"
"""Environment variable: `1` makes `check_case` write the expected files instead of comparing."""

TOLERANCE = 1e-12
"""Largest relative error (max |y - y'| / max |y|, float64) allowed between a case and its minimized form."""

DEFAULT_DIM = 3
"""Size of a symbolic dim (N, S, ...) in the numeric check when no `dims:` directive gives one."""

EXPECTED_SUFFIX = ".expected.sr"
KEYWORDS = ("seed", "set", "rules", "dims")

# ---- the directive grammar ------------------------------------------------------------------------
# A directive line: optional blanks, '#', optional blanks, keyword, ':', arguments.
_DIRECTIVE = re.compile(r"^(?P<lead>\s*#\s*)(?P<kw>[a-z][a-z0-9_-]*)\s*:(?P<args>.*)$")
# FileCheck habit: `// seed: 0` (the IR grammar does not ignore '//', it is floor division in dims).
_SLASHED = re.compile(r"^\s*//\s*(?P<kw>[a-z][a-z0-9_-]*)\s*:")
_INT = r"[+-]?\d+"
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_SEED = re.compile(rf"^\s*(?P<v>{_INT})\s*$")
_SET = re.compile(r"^\s*(?P<target>@[A-Za-z0-9_.]+)\s*(?:\[(?P<index>[^\]]*)\])?\s*=\s*(?P<value>\S+)\s*$")
_INDEX_ITEM = re.compile(rf"^\s*(?:(?P<int>{_INT})|(?P<start>{_INT})?\s*:\s*(?P<stop>{_INT})?)\s*$")
_DIM_ITEM = re.compile(r"^\s*(?P<name>[A-Z][A-Za-z0-9_]*)\s*=\s*(?P<v>\d+)\s*$")
_RULES = re.compile(r"^\s*(?P<path>[A-Za-z0-9_.][A-Za-z0-9_./-]*)\s*$")


class DirectiveError(SrIrError):
    """A malformed or inapplicable directive; prints as `file:line:col: message`."""


IndexItem = int | slice


@dataclass(frozen=True)
class SetDirective:
    """`# set: @name[index] = value`: write `value` into the slice `index` of tensor `name`."""

    loc: Loc
    target: str  # the parameter name, without '@'
    index: tuple[IndexItem, ...] | None  # None: the whole tensor
    value: float

    def describe(self) -> str:
        if self.index is None:
            return f"@{self.target}"
        items = []
        for it in self.index:
            if isinstance(it, slice):
                a = "" if it.start is None else str(it.start)
                b = "" if it.stop is None else str(it.stop)
                items.append(f"{a}:{b}")
            else:
                items.append(str(it))
        return f"@{self.target}[{', '.join(items)}]"


@dataclass
class Directives:
    """What a case's directive comments say (defaults where a directive is absent)."""

    seed: int = 0
    sets: list[SetDirective] = field(default_factory=list)
    rules: list[tuple[str, Loc]] = field(default_factory=list)  # as written, relative to the repository
    dims: dict[str, int] = field(default_factory=dict)
    dim_locs: dict[str, Loc] = field(default_factory=dict)
    seed_loc: Loc | None = None


def parse_directives(text: str, filename: str) -> Directives:
    """Read the directive comments of a case. Raises DirectiveError (`file:line:col: message`) at the
    first bad one. Only matches text against fixed patterns: nothing is evaluated."""
    out = Directives()
    for lineno, line in enumerate(text.splitlines(), start=1):
        slashed = _SLASHED.match(line)
        if slashed and slashed.group("kw") in KEYWORDS:
            col = line.index("//") + 1
            raise DirectiveError(
                f"directives are '#' comments (the IR grammar ignores '#', not '//'): write '# {line.strip()[2:].strip()}'",
                Loc(filename, lineno, col),
            )
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        kw = m.group("kw")
        kw_loc = Loc(filename, lineno, len(m.group("lead")) + 1)
        args = m.group("args")
        args_col = m.start("args") + 1  # column of the text after ':'
        first = Loc(filename, lineno, args_col + len(args) - len(args.lstrip()))  # its first non-blank
        if kw == "seed":
            _parse_seed(out, args, first, kw_loc)
        elif kw == "set":
            out.sets.append(_parse_set(args, filename, lineno, args_col))
        elif kw == "rules":
            pm = _RULES.match(args)
            if not pm:
                raise DirectiveError(f"rules: expected a directory relative to the repository, got {args.strip()!r}", first)
            out.rules.append((pm.group("path"), Loc(filename, lineno, args_col + pm.start("path"))))
        elif kw == "dims":
            _parse_dims(out, args, filename, lineno, args_col)
        else:
            raise DirectiveError(f"unknown directive {kw!r} (known: {', '.join(KEYWORDS)})", kw_loc)
    return out


def _parse_seed(out: Directives, args: str, loc: Loc, kw_loc: Loc) -> None:
    sm = _SEED.match(args)
    if not sm:
        raise DirectiveError(f"seed: expected an integer, got {args.strip()!r}", loc)
    if out.seed_loc is not None:
        raise DirectiveError(f"a second seed directive (the first is at line {out.seed_loc.line})", kw_loc)
    out.seed = int(sm.group("v"))
    out.seed_loc = kw_loc


def _parse_set(args: str, filename: str, lineno: int, col: int) -> SetDirective:
    loc = Loc(filename, lineno, col + len(args) - len(args.lstrip()))
    m = _SET.match(args)
    if not m:
        raise DirectiveError(f"set: expected '@name[index] = number' or '@name = number', got {args.strip()!r}", loc)
    value_text = m.group("value")
    value_loc = Loc(filename, lineno, col + m.start("value"))
    if not _NUMBER.match(value_text) or float(value_text) in (float("inf"), float("-inf")):
        raise DirectiveError(f"set: expected a finite number, got {value_text!r}", value_loc)
    index: tuple[IndexItem, ...] | None = None
    if m.group("index") is not None:
        items: list[IndexItem] = []
        pos = m.start("index")
        for part in m.group("index").split(","):
            im = _INDEX_ITEM.match(part)
            if not im:
                raise DirectiveError(
                    f"set: index entry {part.strip()!r}: expected an integer, ':', 'a:b', 'a:' or ':b'",
                    Loc(filename, lineno, col + pos + (len(part) - len(part.lstrip()))),
                )
            if im.group("int") is not None:
                items.append(int(im.group("int")))
            else:
                a, b = im.group("start"), im.group("stop")
                items.append(slice(None if a is None else int(a), None if b is None else int(b)))
            pos += len(part) + 1
        index = tuple(items)
    return SetDirective(loc, m.group("target")[1:], index, float(value_text))


def _parse_dims(out: Directives, args: str, filename: str, lineno: int, col: int) -> None:
    pos = 0
    for part in args.split(","):
        dm = _DIM_ITEM.match(part)
        at = Loc(filename, lineno, col + pos + (len(part) - len(part.lstrip())))
        if not dm:
            raise DirectiveError(f"dims: expected 'NAME=size' (a dim symbol and a positive integer), got {part.strip()!r}", at)
        name, v = dm.group("name"), int(dm.group("v"))
        if v < 1:
            raise DirectiveError(f"dims: {name} must be at least 1", at)
        if name in out.dims:
            raise DirectiveError(f"dims: {name} given twice", at)
        out.dims[name] = v
        out.dim_locs[name] = at
        pos += len(part) + 1


# ---- cases --------------------------------------------------------------------------------------
@dataclass
class RuleCase:
    """One case: its files, text and directives."""

    path: Path
    text: str
    directives: Directives
    name: str = ""  # the file name used in error locations and diffs (the path when empty)

    def __post_init__(self) -> None:
        self.name = self.name or str(self.path)

    @property
    def expected_path(self) -> Path:
        return expected_path(self.path)


def expected_path(case: Path) -> Path:
    """`dir/name.sr` -> `dir/name.expected.sr`."""
    return case.with_name(case.name[: -len(".sr")] + EXPECTED_SUFFIX)


def find_cases(root: str | os.PathLike[str]) -> list[Path]:
    """Every case under `root`: the `.sr` files that are not `.expected.sr`, sorted."""
    return sorted(p for p in Path(root).rglob("*.sr") if not p.name.endswith(EXPECTED_SUFFIX))


def repo_root(start: Path) -> Path:
    """The nearest folder above `start` holding pyproject.toml (`rules:` paths are relative to it)."""
    for d in [start.resolve(), *start.resolve().parents]:
        if (d / "pyproject.toml").is_file():
            return d
    raise SrIrError(f"{start}: no pyproject.toml above it (rules: paths are relative to the repository root)")


def load_case(path: str | os.PathLike[str], display: str | None = None) -> RuleCase:
    """Read a case file and its directives. `display` is the file name used in error locations."""
    p = Path(path)
    text = p.read_text()
    name = display or str(p)
    return RuleCase(p, text, parse_directives(text, name), name)


def _rule_dirs(case: RuleCase) -> list[Path]:
    if not case.directives.rules:
        return []
    root = repo_root(case.path.parent)
    dirs = []
    for rel, loc in case.directives.rules:
        d = (root / rel).resolve()
        if root not in (d, *d.parents):
            raise DirectiveError(f"rules: {rel!r} is outside the repository", loc)
        if not d.exists():
            raise DirectiveError(f"rules: no such directory {rel!r} (relative to {root})", loc)
        dirs.append(d)
    return dirs


def build_weights(program: "Program", directives: Directives) -> dict[str, torch.Tensor]:
    """The weights a case's directives describe, for every parameter and buffer of `program`: a
    seeded normal draw (per name, so adding a tensor does not change the others; a buffer whose name
    ends in running_var drawn positive), then the `set` directives in order."""
    weights: dict[str, torch.Tensor] = {}
    for name, t in program.params.items():
        shape = [d for d in t.shape]
        if not all(isinstance(d, int) for d in shape):
            raise SrIrError(f"@{name}: a parameter of a rule case needs a concrete shape, not {t}")
        dtype = t.torch_dtype
        if not dtype.is_floating_point:
            raise SrIrError(f"@{name}: rule cases draw float parameters only ({t})")
        g = torch.Generator().manual_seed((directives.seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        w = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith("running_var"):
            w = w.abs() + 0.5
        weights[name] = w.to(dtype)
    for s in directives.sets:
        if s.target not in weights:
            raise DirectiveError(f"set: the program declares no parameter or buffer @{s.target}", s.loc)
        w = weights[s.target]
        if s.index is None:
            w.fill_(s.value)
            continue
        if len(s.index) != w.dim():
            raise DirectiveError(
                f"set: {s.describe()} has {len(s.index)} index entries, @{s.target} has rank {w.dim()} {list(w.shape)}", s.loc
            )
        for axis, (it, n) in enumerate(zip(s.index, w.shape)):
            if isinstance(it, int):
                if not -n <= it < n:
                    raise DirectiveError(f"set: {s.describe()}: index {it} is out of range for axis {axis} of length {n}", s.loc)
            else:
                a = 0 if it.start is None else (it.start + n if it.start < 0 else it.start)
                b = n if it.stop is None else (it.stop + n if it.stop < 0 else it.stop)
                if not (0 <= a < b <= n):
                    raise DirectiveError(
                        f"set: {s.describe()}: slice {a}:{b} is empty or out of range for axis {axis} of length {n}", s.loc
                    )
        w[s.index] = s.value
    return weights


def _bind(dim: "int | sympy.Expr", sizes: dict[str, int], default: int) -> int:
    if isinstance(dim, int):
        return dim
    return int(dim.subs({s: sizes.get(str(s), default) for s in dim.free_symbols}))


def example_inputs(program: "Program", directives: Directives, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs of the program's types (floats normal, integers valid indices of what they
    index), symbolic dims bound by `dims:` (default DEFAULT_DIM)."""
    symbols = {str(s) for _, t in program.inputs for d in t.shape if not isinstance(d, int) for s in d.free_symbols}
    for name, loc in directives.dim_locs.items():
        if name not in symbols:
            raise DirectiveError(f"dims: the program's inputs have no dim {name}"
                                 f" (they have {', '.join(sorted(symbols)) or 'none'})", loc)
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, t in program.inputs:
        shape = [_bind(d, directives.dims, DEFAULT_DIM) for d in t.shape]
        if t.torch_dtype.is_floating_point:
            out.append(torch.randn(shape, generator=g, dtype=torch.float64).to(t.torch_dtype))
        else:
            out.append(torch.randint(0, index_bound(program, name), shape, generator=g, dtype=t.torch_dtype))
    return out


@dataclass
class CaseResult:
    """What running a case produced."""

    case: RuleCase
    original: "Program"  # the case's program, with the weights its directives describe
    minimized: "Program"
    text: str  # the minimized program, printed
    report: "MinimizeReport"
    max_rel: float  # the worst relative error of the numeric check


def case_rules(case: RuleCase) -> "RuleSet":
    """The rule set a case runs with: the bundled rules, plus its `rules:` directories."""
    from ..lang.loader import default_rules, load_rules

    extra = _rule_dirs(case)
    return load_rules(extra=extra) if extra else default_rules()


def run_case(case: RuleCase, rules: "RuleSet | None" = None, book: "RuleBook | None" = None) -> CaseResult:
    """Parse the case, build its weights, minimize it and verify the result numerically: float64, on
    the case's inputs and random ones, relative error <= TOLERANCE (VerificationError beyond it).
    `rules` replaces the case's rule set and `book` the RuleBook (tests of the runner use them to
    forge a wrong rule)."""
    from ..backend import emit
    from ..ir.checker import check_program
    from ..ir.parser import parse
    from ..minimization import minimize_program
    from ..minimization.verify import same_function

    rs = rules if rules is not None else case_rules(case)
    program = parse(case.text, case.name, check=False)
    check_program(program, rs)
    program.weights = build_weights(program, case.directives)
    reference = emit(program, rs)  # before minimizing: nothing the engine does can reach it
    minimized, report = minimize_program(program, rs, book=book)
    text = minimized.to_text()
    inputs = example_inputs(program, case.directives)
    rep = same_function(reference, emit(minimized, rs), inputs, n_random=2, dtypes=(torch.float64,),
                  tolerance={torch.float64: TOLERANCE})
    worst = rep.worst("float64")
    return CaseResult(case, program, minimized, text, report, worst.max_rel if worst else 0.0)


def updating() -> bool:
    """True when SR_IR_UPDATE_RULECASES=1 asks for the expected files to be (re)written."""
    return os.environ.get(UPDATE_ENV, "") == "1"


def check_case(path: str | os.PathLike[str], display: str | None = None, update: bool | None = None) -> CaseResult:
    """Run one case and compare its minimized text with `<case>.expected.sr`: AssertionError with a
    unified diff on a mismatch, or when the expected file is missing, or when a rule the case needs was
    refused for want of a current certificate. With `update` (default: SR_IR_UPDATE_RULECASES=1 in the
    environment) write the expected file instead; the numeric check runs either way, so a result that
    differs from the original is never recorded. `display` names the case in errors and the diff."""
    case = load_case(path, display)
    res = run_case(case)
    refused = getattr(res.report, "refused_rules", {}) or {}
    if refused:
        why = "; ".join(f"{k}: {v}" for k, v in refused.items())
        raise AssertionError(f"{case.name}: rules refused (no current certificate), so the result is not their effect: {why}")
    exp = case.expected_path
    if update if update is not None else updating():
        if not exp.exists() or exp.read_text() != res.text:
            exp.write_text(res.text)
        return res
    if not exp.exists():
        raise AssertionError(f"{case.name}: no {exp.name}; {UPDATE_ENV}=1 writes it. The minimized program:\n{res.text}")
    want = exp.read_text()
    if want != res.text:
        stem = case.name[: -len(".sr")] if case.name.endswith(".sr") else case.name
        diff = "".join(difflib.unified_diff(want.splitlines(keepends=True), res.text.splitlines(keepends=True),
                                            fromfile=f"{stem}{EXPECTED_SUFFIX} (expected)",
                                            tofile=f"{case.name} (minimized)"))
        raise AssertionError(f"{case.name}: the minimized program differs from {exp.name} "
                             f"({UPDATE_ENV}=1 rewrites it):\n{diff}")
    return res


__all__ = [
    "CaseResult",
    "DirectiveError",
    "Directives",
    "RuleCase",
    "SetDirective",
    "TOLERANCE",
    "UPDATE_ENV",
    "build_weights",
    "case_rules",
    "check_case",
    "example_inputs",
    "expected_path",
    "find_cases",
    "load_case",
    "parse_directives",
    "run_case",
    "updating",
]
