"""The public API keeps its promises: every public function is typed and documented with an example,
every public class and method documented, and the examples run (those not marked to skip)."""
from __future__ import annotations

import doctest
import inspect

import pytest

import sr_ir
import sr_ir.cycle as cycle

PUBLIC = [(f"sr_ir.{n}", getattr(sr_ir, n)) for n in sr_ir.__all__] + \
         [(f"sr_ir.cycle.{n}", getattr(cycle, n)) for n in cycle.__all__]
FUNCTIONS = [(n, o) for n, o in PUBLIC if inspect.isfunction(o)]
CLASSES = [(n, o) for n, o in PUBLIC if inspect.isclass(o)]


def _methods(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, f in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(f, property):
            out.append((name, f.fget))
        elif isinstance(f, (staticmethod, classmethod)):
            out.append((name, f.__func__))
        elif inspect.isfunction(f):
            out.append((name, f))
    return out


def _typed(fn: object) -> list[str]:
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    missing = [p for p, v in sig.parameters.items() if p not in ("self", "cls") and v.annotation is inspect._empty]
    if sig.return_annotation is inspect._empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("name,fn", FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_public_function_is_typed_and_has_an_example(name, fn):
    assert not _typed(fn), f"{name}: no annotation for {_typed(fn)}"
    assert ">>>" in (inspect.getdoc(fn) or ""), f"{name} has no example in its docstring"


@pytest.mark.parametrize("name,cls", CLASSES, ids=[n for n, _ in CLASSES])
def test_public_class_and_its_methods_are_documented_and_typed(name, cls):
    assert inspect.getdoc(cls), f"{name} has no docstring"
    for m, fn in _methods(cls):
        assert inspect.getdoc(fn), f"{name}.{m} has no docstring"
        assert not _typed(fn), f"{name}.{m}: no annotation for {_typed(fn)}"


def _examples() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=False)
    tests = []
    for name, obj in FUNCTIONS + CLASSES:
        objs = [obj] + ([fn for _, fn in _methods(obj)] if inspect.isclass(obj) else [])
        for o in objs:
            # the globals of the function's own module, as `python -m doctest` would give
            for t in finder.find(o, f"{name}.{getattr(o, '__name__', '')}", module=inspect.getmodule(o)):
                if any(not ex.options.get(doctest.SKIP) for ex in t.examples):
                    tests.append(t)
    return tests


EXAMPLES = _examples()


@pytest.mark.parametrize("test", EXAMPLES, ids=[t.name for t in EXAMPLES])
def test_docstring_examples_run(test):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    runner.run(test, out=out.append)
    assert runner.failures == 0, "".join(out)
