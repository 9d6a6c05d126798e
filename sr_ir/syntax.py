"""Parse errors of both grammars (program text and rule files) as one-line ParseErrors with
file:line:col: lark's own exceptions never reach a user."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

import lark

from .errors import Loc, ParseError

T = TypeVar("T")


def parsing(filename: str, parse: Callable[[], T], passthrough: tuple[type[Exception], ...] = ()) -> T:
    """Run `parse` (a lark parse and tree transform); a syntax error or an error raised by the
    transformer becomes a ParseError at the place it was found. Transformer errors of a type in
    `passthrough` are not ours to describe: they propagate unchanged (the original exception)."""
    try:
        return parse()
    except lark.exceptions.UnexpectedInput as e:
        raise ParseError(describe(e), Loc(filename, e.line, e.column)) from None
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, ParseError):
            err = e.orig_exc
            if err.loc is None:
                err.loc = _where(filename, e.obj)
            raise err from None
        if isinstance(e.orig_exc, passthrough):
            raise e.orig_exc from None
        raise ParseError(str(e.orig_exc), _where(filename, e.obj)) from None


def read_source(path: "str | os.PathLike[str]", name: str | None = None) -> str:
    """The text of a program or rule file; bytes that are not UTF-8 are a ParseError at their place."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ParseError(f"not UTF-8 text (byte 0x{data[e.start]:02x})", Loc(name or str(path), line, col)) from None


def describe(e: lark.exceptions.UnexpectedInput) -> str:
    """What lark found, in a few words: the character or token, and what would have fit."""
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        return f"unexpected character {e.char!r}"
    if isinstance(e, lark.exceptions.UnexpectedToken):
        if e.token.type == "$END":
            return "unexpected end of input"
        expected = sorted(x for x in e.expected if not x.startswith("__"))[:6]
        hint = f" (expected {', '.join(expected)})" if expected else ""
        return f"unexpected {e.token.type.lower()} {str(e.token)!r}{hint}"
    if isinstance(e, lark.exceptions.UnexpectedEOF):
        return "unexpected end of input"
    return str(e).splitlines()[0]


def _where(filename: str, obj: Any) -> Loc:
    meta = getattr(obj, "meta", None)
    return Loc(filename, getattr(meta, "line", 0), getattr(meta, "column", 0))
