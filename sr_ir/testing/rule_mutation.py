"""Mutated rule files, for fuzzing the rule loader and what uses a loaded rule later: a seeded mutator
(blind text edits, and edits aimed at names, numbers, operators, clauses and torch templates), a
layout that puts one mutated file in a rule directory of its own beside the other rule files, and the
uses a rule set the loader accepts must survive: certificate checks (`sr-ir prove --check`), the
prover's cheap front (instances and one exact evaluation of each changed rule), the engine's rule
compiler, and type-checking and emitting the programs that use a changed op.

    fuzz = RuleFuzz(tmp, programs=case_programs(Path("tests/rulecases")))
    text = mutate(fuzz.original(path), rng)
    outcome = fuzz.run(path, text)   # Outcome("accepted" | "rejected_located" | ..., detail)

Only tests and benchmarks use this.
"""
from __future__ import annotations

import contextlib
import random
import re
import signal
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import SrIrError
from ..lang.loader import RuleSet, load_rules
from ..resources import data_dir
from .text_edits import blind_edit

# ---- the mutator ---------------------------------------------------------------------------------
FRAGMENTS = ["(", ")", "[", "]", ",", ":", "=", "==", "->", "*", "*B", "?", "...", "|", "{", "}", '"', "'",
             "\n", " ", "#", "\\", "_", ".", "0", "-1", "2.5", "n", "m", "c", "k", "x", "T", "I", "f32", "ints",
             "where", "means", "torch", "aten", "match", "then", "unused", "axioms", "doc", "op", "rule",
             "function", "axiom", "semantics", "shape", "drop(", "sum(j < n, ", "opt(", "none", "true"]
# what a torch template is most likely to be broken or abused with
TEMPLATE_EDITS = ["{", "}", "{x}", "{y}", "{nope}", "{x.__class__}", "{x!r}", "{{", "}}", ")", "(", ",", ".",
                  "__import__('os').system('true')", ".__class__", "lambda: 0", "[a for a in []]", "torch.load",
                  "open('x')", "getattr(torch, 'relu')", "f'{1}'", "torch.os", "P.nothing", "F.torch", "*", ":=",
                  "torch.relu(", "torch", "{x}.numpy()", "\\n", "\\u0000", '\\"']
NUMBERS = ["0", "-1", "1", "2", "3", "-2", "1.5", "1e-05", "99999999999999999999", "0.0"]
OPERATORS = ["+", "-", "*", "/", "//", "%", "^", "==", "!=", "<", "<=", ">", ">="]
_IDENT = re.compile(r"(?<![A-Za-z0-9_.\"])[A-Za-z_][A-Za-z0-9_]*(?![A-Za-z0-9_])")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![A-Za-z0-9_.])")
_OPERATOR = re.compile(r"(?<=\s)(?:\+|-|\*|/|//|%|\^|==|!=|<=|>=|<|>)(?=\s)")
_TEMPLATE = re.compile(r'torch "((?:[^"\\\n]|\\.)*)"')
_CLAUSE = re.compile(r"^\s+(?:where|means|torch|aten|match|then|axioms|doc)\b.*$", re.M)


def _replace_match(text: str, pattern: re.Pattern[str], choices: Callable[[str], str], rng: random.Random) -> str:
    found = list(pattern.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    return text[:m.start()] + choices(m.group(0)) + text[m.end():]


def _rename(text: str, rng: random.Random) -> str:
    """One occurrence of a name replaced by another name of the same file (a dim no operand binds,
    an operand a template does not declare, an op called with another's name)."""
    names = sorted(set(_IDENT.findall(text)))
    return _replace_match(text, _IDENT, lambda _: rng.choice(names), rng) if names else text


def _edit_template(text: str, rng: random.Random) -> str:
    """An edit inside one `torch "..."` string: a fragment inserted, or a few characters deleted."""
    found = list(_TEMPLATE.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    body, start = m.group(1), m.start(1)
    i = rng.randint(0, len(body))
    if rng.random() < 0.3 and body:
        j = min(len(body), i + rng.randint(1, 4))
        return text[:start + i] + text[start + j:]
    return text[:start + i] + rng.choice(TEMPLATE_EDITS) + text[start + i:]


def _move_clause(text: str, rng: random.Random) -> str:
    """A clause line (where, means, torch, ...) deleted, or copied after another one."""
    found = list(_CLAUSE.finditer(text))
    if not found:
        return text
    m = rng.choice(found)
    if rng.random() < 0.5:
        return text[:m.start()] + text[m.end() + 1:]
    to = rng.choice(found)
    return text[:to.end()] + "\n" + m.group(0) + text[to.end():]


def mutate(text: str, rng: random.Random, edits: tuple[int, int] = (1, 3)) -> str:
    """`text` after a few random edits (how many: between `edits`), each a blind text edit or one
    aimed at a name, a number, an operator, a clause or a torch template."""
    aimed: list[Callable[[str], str]] = [
        lambda t: _rename(t, rng),
        lambda t: _replace_match(t, _NUMBER, lambda _: rng.choice(NUMBERS), rng),
        lambda t: _replace_match(t, _OPERATOR, lambda _: rng.choice(OPERATORS), rng),
        lambda t: _edit_template(t, rng),
        lambda t: _edit_template(t, rng),
        lambda t: _move_clause(t, rng),
    ]
    for _ in range(rng.randint(*edits)):
        text = blind_edit(text, rng, FRAGMENTS) if rng.random() < 0.4 else rng.choice(aimed)(text)
    return text or "\n"


def rule_files(root: Path | None = None) -> list[Path]:
    """The bundled rule files (or those under `root`), in load order."""
    return sorted((root or data_dir("rules")).rglob("*.rules"))


# ---- outcomes ------------------------------------------------------------------------------------
# accepted_slow: accepted, and the prover's front ran past its deadline (`sr-ir prove` gives a rule a
# deadline too, and reports it unknown after it): not a failure, counted apart
OUTCOMES = ("accepted", "rejected_located", "accepted_slow", "rejected_unlocated", "uncaught", "accepted_crashed")
FAILURES = OUTCOMES[3:]


@dataclass
class Outcome:
    kind: str  # one of OUTCOMES
    detail: str = ""  # the error, or what escaped


def describe(e: BaseException) -> str:
    """`Type: first line at file:line` of the innermost frame (where it was raised)."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    first = str(e).splitlines()[0][:240] if str(e) else ""
    return f"{type(e).__name__}: {first}{where}"


def located(e: SrIrError) -> bool:
    """The error is one line and points at a line and column of a rule file."""
    loc = e.loc
    return (loc is not None and loc.line >= 1 and loc.col >= 1 and "\n" not in str(e)
            and Path(loc.file).suffix == ".rules" and Path(loc.file).is_file())


# ---- the harness ---------------------------------------------------------------------------------
@dataclass
class RuleFuzz:
    """Loads mutants of the rule files under `source` (default: the bundled rules/): the mutated file
    as the one file of a user rule directory, beside the other files (`base` may name a subset of
    them, relative to `source`, for speed); then exercises what was accepted."""

    workdir: Path
    source: Path = field(default_factory=lambda: data_dir("rules"))
    base: tuple[str, ...] | None = None  # relative paths of the other files loaded (None: all)
    programs: tuple[Any, ...] = ()  # parsed programs (sr_ir.ir.program.Program) to type-check and emit
    max_rules: int | None = None  # changed rules given to the prover's front per mutant (None: all)
    deadline_s: float = 20.0  # for exercising one mutant
    _baselines: dict[Path, dict[str, str]] = field(default_factory=dict)

    def original(self, path: Path) -> str:
        return Path(path).read_text(encoding="utf-8")

    def dirs(self, path: Path) -> tuple[Path, Path]:
        """(base directory without `path`, user directory that holds the mutant) for one file."""
        rel = Path(path).resolve().relative_to(self.source.resolve())
        key = re.sub(r"[^A-Za-z0-9]", "_", str(rel))
        base, user = self.workdir / f"base_{key}", self.workdir / f"user_{key}"
        if not base.is_dir():
            # links, not copies: errors and certificates name the files they link to, and loads of the
            # other files share the loader's parse cache whatever the target
            for f in rule_files(self.source):
                r = f.relative_to(self.source)
                if r != rel and (self.base is None or str(r) in self.base):
                    (base / r).parent.mkdir(parents=True, exist_ok=True)
                    (base / r).symlink_to(f.resolve())
            base.mkdir(parents=True, exist_ok=True)
            user.mkdir(parents=True, exist_ok=True)
        return base, user

    def write(self, path: Path, text: str) -> tuple[Path, Path]:
        base, user = self.dirs(path)
        (user / Path(path).name).write_text(text, encoding="utf-8")
        return base, user

    def load(self, path: Path, text: str) -> RuleSet:
        base, user = self.write(path, text)
        return load_rules(paths=[base], extra=[user], cache=False)  # loaded once: caching costs a write

    def baseline(self, path: Path) -> dict[str, str]:
        """What every item means in the unmutated layout: a changed item is what a mutant changed."""
        if path not in self._baselines:
            self._baselines[path] = fingerprints(self.load(path, self.original(path)))
        return self._baselines[path]

    def run(self, path: Path, text: str) -> Outcome:
        """Load one mutant of `path` and, if accepted, exercise it."""
        before = self.baseline(path)
        try:
            rs = self.load(path, text)
        except SrIrError as e:
            return Outcome("rejected_located" if located(e) else "rejected_unlocated", str(e))
        except Exception as e:  # noqa: BLE001 - what escapes the loader is what this counts
            return Outcome("uncaught", describe(e))
        try:
            with _deadline(self.deadline_s):
                exercise(rs, changed(rs, before), self.programs, self.max_rules)
        except _OutOfTime:
            return Outcome("accepted_slow", f"exercising it took more than {self.deadline_s} s")
        except Exception as e:  # noqa: BLE001
            return Outcome("accepted_crashed", describe(e))
        return Outcome("accepted")


@contextlib.contextmanager
def bundled_rules_at(folder: Path) -> Iterator[None]:
    """Make `folder` the bundled rules/ for the modules that look it up (the CLI loads the bundled
    rules and any --rules DIR: here the other files, and the mutant's own directory)."""
    from unittest import mock

    from .. import resources
    from ..lang import loader
    from ..prover import certificates

    real = resources.data_dir

    def moved(name: str) -> Path:
        return folder if name == "rules" else real(name)

    with contextlib.ExitStack() as stack:
        for module in (resources, loader, certificates):
            stack.enter_context(mock.patch.object(module, "data_dir", moved))
        yield


def fingerprints(rs: RuleSet) -> dict[str, str]:
    """Item -> the text its meaning is read from (for a rule what its certificate hashes: its text,
    the semantics of the ops it uses, its axioms and functions)."""
    from ..prover.certificates import op_semantics_text, vocabulary_text

    ops = {d.name: op_semantics_text(d) + "".join(f"\naten {m.target}{m.args}" for m in d.aten)
           for d in rs.ops.values()}
    out = {f"op {name}": text for name, text in ops.items()}
    for r in rs.rules:
        out[f"rule {r.name}"] = "\0".join([r.text(), vocabulary_text(r), *(ops.get(o, o) for o in r.ops_used)])
    out.update({f"function {f.name}": f.text() for f in rs.functions.values()})
    return out


@dataclass
class Changed:
    rules: list[Any]
    ops: list[Any]
    functions: list[Any]


def changed(rs: RuleSet, before: dict[str, str]) -> Changed:
    """The items of `rs` that are new or mean something else than in `before`."""
    now = fingerprints(rs)
    diff = {k for k, v in now.items() if before.get(k) != v}
    return Changed([r for r in rs.rules if f"rule {r.name}" in diff],
                   [d for d in rs.ops.values() if f"op {d.name}" in diff],
                   [f for f in rs.functions.values() if f"function {f.name}" in diff])


# The prover's and the evaluators' own ways of saying "this cannot be evaluated here": a rule the
# front cannot instantiate or evaluate is reported (status `error`), not a crash.
def _expected_errors() -> tuple[type[BaseException], ...]:
    from ..ir.shape_functions import ShapeError
    from ..lang.evaluate import EvalError
    from ..prover.algebra import NotReal
    from ..prover.semantics import InstanceError, NeedConcrete, SemanticsError

    return SrIrError, SemanticsError, InstanceError, NeedConcrete, NotReal, EvalError, ShapeError, ZeroDivisionError


def exercise(rs: RuleSet, what: Changed, programs: Iterable[Any] = (), max_rules: int | None = None) -> None:
    """Use a loaded rule set the way sr-ir would, for the items a mutant changed; any exception but
    the project's own (and the prover's "cannot evaluate") propagates."""
    from ..prover.certificates import certificate_status
    from ..rewrite.compiled import compile_rule

    expected = _expected_errors()
    for r in what.rules:  # `sr-ir prove --check`, the engine's gate
        certificate_status(r, rs)
    for r in what.rules[:max_rules]:
        with _allowing(expected):
            compile_rule(r, rs.ops)
        with _allowing(expected):
            prover_front(r, rs)
    for f in what.functions:
        if f.torch is not None:
            from ..lang.functions import torch_function

            torch_function(f)  # compiles the template
    names = {d.name for d in what.ops}
    for p in programs:
        if names & {n.op for n in p.nodes}:
            check_and_emit(p, rs, expected)


def prover_front(rule: Any, rs: RuleSet) -> None:
    """What `sr-ir prove` does first with a rule: its conditions sorted, its instances found, one
    random exact evaluation at the first (no solver)."""
    from ..prover.algebra import Exact
    from ..prover.axioms import Theory
    from ..prover.obligation import classify_where, concrete_instances
    from ..prover.tiers import CONFIGS, exact_check

    where = classify_where(rule)
    insts = [i for i in concrete_instances(rule, rs.ops, where, lambda: Exact("standin"), CONFIGS[:1], 0)
             if not i.ill_typed]
    if insts:
        exact_check(rule, rs.ops, where, insts[0], Exact("standin", seed=0, theory=Theory.of_rule(rule)),
                    random.Random(0), tries=2)


def check_and_emit(program: Any, rs: RuleSet, expected: tuple[type[BaseException], ...]) -> None:
    """Type-check `program` against `rs`; if it checks, emit its module source and compile it."""
    from ..backend.torch_module import emit_source
    from ..ir.checker import check_program

    with _allowing(expected):
        check_program(program, rs)
        source = emit_source(program, rs)
        compile(source, "<sr-ir fuzz>", "exec")


class _OutOfTime(BaseException):
    """Raised by the deadline's alarm (a BaseException: no `except Exception` on the way swallows it)."""


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _OutOfTime in the main thread after `seconds` (as `sr-ir prove` bounds each rule)."""
    def ring(signum: int, frame: Any) -> None:
        raise _OutOfTime()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _allowing(kinds: tuple[type[BaseException], ...]) -> Iterator[None]:
    with contextlib.suppress(*kinds):
        yield


def case_programs(root: Path) -> tuple[Any, ...]:
    """The rule-case input programs under `root` (tests/rulecases) that parse without extra rules."""
    import sr_ir

    out = []
    for f in sorted(root.rglob("*.sr")):
        if f.name.endswith(".expected.sr") or "# rules:" in f.read_text():
            continue
        out.append(sr_ir.parse(f.read_text(), str(f)))
    return tuple(out)


__all__ = ["FAILURES", "OUTCOMES", "Outcome", "RuleFuzz", "bundled_rules_at", "changed", "exercise", "fingerprints", "mutate",
           "rule_files", "case_programs"]
