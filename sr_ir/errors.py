"""Errors the project reports to users: one line, with a source location where there is one."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Loc:
    """A position in a text file (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


def describe(e: BaseException, limit: int = 400) -> str:
    """`Type: first line of the message`, shortened, for quoting a foreign exception in a one-line
    error (torch's messages run to pages)."""
    line = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    line = line if len(line) <= limit else line[: limit - 3] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


class SrIrError(Exception):
    """Base of every error sr-ir reports on purpose. The CLI prints it as one line, no traceback."""

    def __init__(self, message: str, loc: Loc | None = None):
        super().__init__(message)
        self.message = message
        self.loc = loc

    def __str__(self) -> str:
        return f"{self.loc}: {self.message}" if self.loc else self.message


class ParseError(SrIrError):
    """Malformed IR or rule text."""


class TypeCheckError(SrIrError):
    """Well-formed text whose types, shapes or op usage are wrong."""


class UnsupportedOpError(SrIrError):
    """A framework op that has no IR declaration; the message names the op and the user's source line."""


class VerificationError(SrIrError):
    """A rewritten model that does not match the original beyond rounding."""
