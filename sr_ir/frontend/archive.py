"""Reading a `.pt2` archive (torch.export.save) without running anything it carries.

`torch.export.load` trusts its input. It unpickles pickled weights, constants and example inputs (the
example inputs with a `weights_only=False` fallback), unpickles opaque constants with plain `pickle`, loads
compiled AOTInductor libraries, evaluates every shape expression with `sympy.sympify` (an `eval`), pastes
node, argument and attribute names into the Python source that FX compiles, and `exec`s the archive's guard
code when the program becomes a module. `load_exported` reads the archive with `zipfile` first and refuses,
in one line naming the member, anything that would run code on any of those paths:

- every pickle stream (the `.pkl` records of each torch.save payload) is scanned with `pickletools`: only
  the opcodes and globals that `torch.load(weights_only=True)` itself accepts may appear; TorchScript
  payloads, non-zip pickles, pickled opaque or script-object constants and AOTInductor code are refused;
- in the program JSON, shape expressions and guards must be plain arithmetic over symbols, sizes and a
  fixed set of functions, names must be identifiers, and node targets must be torch operators;

and then lets torch read it with every `torch.load` forced to `weights_only=True` and its log kept (a
broken archive is one line naming torch's first error, not torch's traceback followed by ours).
`check_torch_save` runs the same pickle scan over a plain torch.save file (a squeeze-release checkpoint).
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import keyword
import logging
import os
import pickletools
import re
import zipfile
import zlib
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import sympy
import torch
from torch.export import ExportedProgram
from torch.export.pt2_archive import constants as pt2

from ..errors import SrIrError, describe

# Records torch reads as short strings, never as pickles (the current format and torch 2.7's).
_TEXT_RECORDS = frozenset({pt2.ARCHIVE_FORMAT_PATH, pt2.ARCHIVE_VERSION_PATH, "byteorder", "version",
                           ".data/version", ".data/serialization_id"})
_TEXT_PREFIXES = (pt2.EXTRA_DIR, "extra_files/")
_LEGACY_PROGRAM = "serialized_exported_program.json"  # torch 2.7's archives, which torch still reads

# The opcodes torch's weights-only unpickler implements (torch/_weights_only_unpickler.py); a stream
# made of these gets callables only from GLOBAL, which is checked against the same allowlist.
_PICKLE_OPCODES = frozenset({
    "PROTO", "STOP", "GLOBAL", "REDUCE", "NEWOBJ", "BUILD", "MARK", "BINPERSID",
    "APPEND", "APPENDS", "SETITEM", "SETITEMS", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "NONE", "NEWTRUE", "NEWFALSE",
    "BININT", "BININT1", "BININT2", "LONG1", "BINFLOAT", "BINUNICODE", "SHORT_BINSTRING",
    "BINGET", "LONG_BINGET", "BINPUT", "LONG_BINPUT",
})

# JSON fields that become code text. Names: FX pastes node and argument names into the source it compiles.
_NAME_KEYS = frozenset({"name", "as_name"})
_NAME_LIST_KEYS = frozenset({"forward_arg_names", "field_names"})
_PATH_KEYS = frozenset({"parameter_name", "buffer_name", "tensor_constant_name", "custom_obj_name",
                        "user_input_name", "fqn"})
_TREESPEC_KEYS = frozenset({"in_spec", "out_spec"})
_OPERATOR_KEYS = frozenset({"target", "as_operator"})

_OP_OVERLOAD = re.compile(r"torch\.ops(?:\.(?!__)\w+){2,3}")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_DOTTED = re.compile(r"[\w.]*")
_WORD = re.compile(r"\w+")
_SYMBOL = re.compile(r"[a-z]+\d+")  # s0, u3: sympify makes these Symbols

# Guards are Python run with torch's SYMPY_INTERP namespace (math, torch, a few helpers) and builtins.
_GUARD_NAMES = frozenset({"L", "math", "torch", "max", "min", "abs", "round", "int", "float", "bool",
                          "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"})
_GUARD_MODULE_ATTRS = frozenset(
    [("math", n) for n in ("floor", "ceil", "trunc", "sqrt", "exp", "log", "log2", "inf", "nan", "pi", "e",
                           "cos", "cosh", "acos", "sin", "sinh", "asin", "tan", "tanh", "atan")]
    + [("torch", n) for n in ("sym_float", "sym_int", "sym_max", "sym_min", "sym_not", "sym_ite",
                              "sym_sqrt", "_sym_sqrt")]
)
_TENSOR_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_ARITHMETIC = (ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call,
               ast.Constant, ast.keyword, ast.Tuple, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)

_TORCH_LOGGERS = ("torch.export", "torch._export")
_FORCE_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
_FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_ZIP_MAGIC = b"PK\x03\x04"
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError)


def load_exported(path: str | os.PathLike[str]) -> ExportedProgram:
    """Read a `.pt2` written by `torch.export.save` without executing anything it carries.

    Raises SrIrError (one line) for a missing file, a file that is not a readable archive, or an archive
    with a member that would run code when torch reads it (the message names the member and what it
    would run)."""
    path = Path(path)
    if not path.is_file():
        raise SrIrError(f"no such file: {path}")
    _check_archive(path)
    with _weights_only_torch_load(), _torch_logs_kept() as logged:
        try:
            return torch.export.load(str(path))
        except Exception as e:  # a corrupt archive raises various errors
            # torch logs the first failure, then raises a vaguer one from its fallback for old archives
            cause = next((r.exc_info[1] for r in logged if r.exc_info and r.exc_info[1]), e)
            raise SrIrError(f"{path}: cannot read the torch.export archive ({describe(cause)})") from None


def check_torch_save(path: str | os.PathLike[str]) -> None:
    """Raise SrIrError (one line, naming the record and the global or opcode) if the torch.save file at
    `path` holds a pickle that torch.load(weights_only=True) would refuse; torch's own refusal is a page
    of text. A file that is not a zip is left to torch.load to report."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        _check_torch_save(path, "", path)


def _check_archive(path: Path) -> None:
    """Raise SrIrError unless every member of the `.pt2` at `path` is safe for torch.export.load to read."""
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as e:
        raise SrIrError(f"{path}: cannot read the torch.export archive ({describe(e)})") from None
    with zf:
        records = _records(path, zf)
        if not records.keys() & {pt2.ARCHIVE_FORMAT_PATH, _LEGACY_PROGRAM}:
            raise SrIrError(f"{path}: cannot read the torch.export archive (a zip file without "
                            f"{pt2.ARCHIVE_FORMAT_PATH}: not written by torch.export.save)")
        documents = {rel: _json(path, zf, info) for rel, info in records.items()
                     if rel.endswith(".json") and not rel.startswith(_TEXT_PREFIXES)}
        for rel, doc in documents.items():
            if problem := _json_problem(doc):
                raise _refusal(path, records[rel].filename, problem)
        raw = _raw_payloads(path, records, documents)
        for rel, info in records.items():
            if rel in documents or rel in raw or rel in _TEXT_RECORDS or rel.startswith(_TEXT_PREFIXES):
                continue
            if rel.startswith(pt2.AOTINDUCTOR_DIR):
                raise _refusal(path, info.filename, "compiled AOTInductor code (a shared library torch would load)")
            _check_torch_save(path, info.filename, _read(path, zf, info))


def _records(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Members by their name below the archive's root folder (torch 2.7's archives have none), casefolded:
    torch's zip reader finds records ignoring case, so two names that differ only in case could be checked
    as one and read as the other."""
    infos = [i for i in zf.infolist() if not i.is_dir()]
    tops = {i.filename.partition("/")[0] for i in infos}
    root = f"{tops.pop()}/" if len(tops) == 1 and all("/" in i.filename for i in infos) else ""
    records: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        rel = info.filename[len(root):].casefold()
        if rel in records:
            raise _refusal(path, info.filename, f"a second member named like {records[rel].filename}")
        records[rel] = info
    return records


def _read(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return zf.read(info)
    except _READ_ERRORS as e:
        raise SrIrError(f"{path}: cannot read the torch.export archive ({info.filename}: {describe(e)})") from None


def _json(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    try:
        return json.loads(_read(path, zf, info))
    except (ValueError, RecursionError) as e:
        raise SrIrError(f"{path}: cannot read the torch.export archive ({info.filename}: {describe(e)})") from None


def _refusal(path: Path, member: str, what: str) -> SrIrError:
    return SrIrError(f"{path}: member {member}: {what}; not loaded (reading it could run code)")


def _raw_payloads(path: Path, records: dict[str, zipfile.ZipInfo], documents: dict[str, Any]) -> set[str]:
    """Members torch reads as raw tensor bytes only (a payload config's entries with use_pickle false).
    Refuses pickled Python objects among the constants, which only plain pickle could read."""
    raw: set[str] = set()
    pickled: set[str] = set()
    for rel, doc in documents.items():
        base = rel.rpartition("/")[0] + "/"
        if base not in (pt2.WEIGHTS_DIR, pt2.CONSTANTS_DIR) or not isinstance(doc, dict):
            continue
        entries = doc.get("config")
        for fqn, meta in (entries.items() if isinstance(entries, dict) else ()):
            name = meta.get("path_name") if isinstance(meta, dict) else None
            if not isinstance(name, str):
                continue
            if base == pt2.CONSTANTS_DIR and name.startswith((pt2.OPAQUE_OBJ_FILENAME_PREFIX,
                                                              pt2.CUSTOM_OBJ_FILENAME_PREFIX)):
                raise _refusal(path, records[rel].filename,
                               f"constant {fqn!r} is a pickled Python object ({name})")
            (pickled if meta.get("use_pickle", True) else raw).add((base + name).casefold())
    return raw - pickled


# ---- pickles ---------------------------------------------------------------------------------------------

def _check_torch_save(path: Path, member: str, payload: bytes | Path) -> None:
    """A torch.save payload (member `member` of the archive at `path`, or the file `path` itself when
    `member` is ""): a zip whose `.pkl` records pass `_pickle_problem`, and no TorchScript."""
    if isinstance(payload, bytes):
        if not payload.startswith(_ZIP_MAGIC):
            raise _refusal(path, member, "not a torch.save zip payload (a bare pickle or unknown data)")
        payload = io.BytesIO(payload)
    try:
        inner = zipfile.ZipFile(payload)
        names = [i.filename for i in inner.infolist() if not i.is_dir()]
    except _READ_ERRORS as e:
        raise _refusal(path, member, f"an unreadable torch.save payload ({describe(e)})") from None
    with inner:
        for name in names:
            where = f"{member}:{name}" if member else name
            low = name.casefold()
            if low.rpartition("/")[2] == "constants.pkl" or "/code/" in low:
                raise _refusal(path, where, "TorchScript, which torch.load would compile and run")
            if not low.endswith(".pkl"):
                continue
            try:
                stream = inner.read(name)
            except _READ_ERRORS as e:
                raise _refusal(path, where, f"unreadable ({describe(e)})") from None
            if problem := _pickle_problem(stream):
                raise _refusal(path, where, problem)


def _pickle_problem(stream: bytes) -> str | None:
    """Why torch.load(weights_only=True) would refuse this pickle, found without unpickling it; None if not.
    A global outside its allowlist is named first, then an opcode outside what it implements."""
    allowed = _allowed_globals()
    opcode = None
    try:
        for op, imported in _pickle_ops(stream):
            if refused := next((n for n in imported if n not in allowed), None):
                return f"unpickles {refused}, which torch.load(weights_only=True) does not allow"
            if opcode is None and op not in _PICKLE_OPCODES:
                opcode = op
    except ValueError as e:  # pickletools' word for a malformed stream
        return f"not a readable pickle ({describe(e)})"
    return f"uses pickle opcode {opcode}, which torch.load(weights_only=True) does not allow" if opcode else None


def _pickle_ops(stream: bytes) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Each opcode's name and the spellings of the global it imports (none for most opcodes).
    STACK_GLOBAL takes its names from the stack: they are read from the last two strings pushed, as
    picklers write them; that only words the message, the opcode itself is refused whatever it names."""
    pushed: list[str | None] = [None, None]
    memo: dict[Any, str | None] = {}
    for op, arg, _ in pickletools.genops(stream):
        imported: tuple[str, ...] = ()
        if op.name in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            imported = _spellings(module, name)
        elif op.name == "STACK_GLOBAL" and None not in pushed[-2:]:
            imported = _spellings(str(pushed[-2]), str(pushed[-1]))
        if op.name == "MEMOIZE":
            memo[len(memo)] = pushed[-1]
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif op.stack_after:
            pushed.append(arg if isinstance(arg, str) and not imported else None)
        yield op.name, imported


def _spellings(module: str, name: str) -> tuple[str, ...]:
    """A global as Python 3 reads a protocol-2 pickle (`__builtin__.exec` is `builtins.exec`), and as
    written; both must be allowed, since which one is imported depends on the protocol and the reader."""
    mapped = NAME_MAPPING.get((module, name)) or (IMPORT_MAPPING.get(module, module), name)
    return tuple(dict.fromkeys((f"{mapped[0]}.{mapped[1]}", f"{module}.{name}")))


@lru_cache(maxsize=1)
def _allowed_globals() -> frozenset[str]:
    # The allowlist torch.load(weights_only=True) checks GLOBALs against: tensor rebuild functions,
    # storages, dtypes, torch.device, torch.Size, OrderedDict, ...
    from torch._weights_only_unpickler import _get_allowed_globals

    return frozenset(_get_allowed_globals())


# ---- the program JSON ------------------------------------------------------------------------------------

def _json_problem(doc: Any) -> str | None:
    """The first field of a JSON document that would become code torch runs, unless it is plain."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                if problem := _field_problem(key, value):
                    return problem
                stack.append(value)
    return None


def _field_problem(key: str, value: Any) -> str | None:
    """What is wrong with one JSON field, for the fields whose text torch evaluates or pastes into code."""
    if key == "expr_str" and isinstance(value, str):
        return _expression_problem(value, _sympy_node_problem, "shape expression")
    if key == "guards_code" and isinstance(value, list):
        return next((p for g in value if (p := _guard_problem(g))), None)
    if key in _OPERATOR_KEYS and isinstance(value, str):
        return None if _OP_OVERLOAD.fullmatch(value) or value in _sym_operators() else f"node target {value!r}"
    if key in _NAME_KEYS and isinstance(value, str):
        return None if value.isidentifier() else f"name {_short(value)}"
    if key in _NAME_LIST_KEYS and isinstance(value, list):
        bad = [v for v in value if not (isinstance(v, str) and v.isidentifier())]
        return f"name {_short(bad[0])}" if bad else None
    if key in _PATH_KEYS and isinstance(value, str):
        return None if value == "" or all(_WORD.fullmatch(s) for s in value.split(".")) else f"name {_short(value)}"
    if key in _TREESPEC_KEYS and isinstance(value, str):
        return _treespec_problem(value)
    return None


def _treespec_problem(text: str) -> str | None:
    """Input and output specs: the type names and dict keys in them end up in generated code."""
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError):
        return f"unreadable input/output spec {_short(text)}"
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            # a context is JSON in a string: the dict keys or type name of that level
            context = node.get("context")
            if isinstance(context, str):
                try:
                    context = json.loads(context)
                except (ValueError, RecursionError):
                    return f"unreadable input/output spec context {_short(context)}"
            stack.extend(v for k, v in node.items() if k != "context")
            stack.append(context)
        elif isinstance(node, str) and not _DOTTED.fullmatch(node):
            return f"input/output spec entry {_short(node)}"
    return None


def _guard_problem(guard: Any) -> str | None:
    if not isinstance(guard, str):
        return f"guard {_short(guard)}"
    return _expression_problem(guard, _guard_node_problem, "guard")


def _expression_problem(text: str, node_problem: Callable[[ast.AST], str | None], what: str) -> str | None:
    """Parse without evaluating; every node of the tree must pass `node_problem`."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return f"{what} {_short(text)} is not an expression"
    for node in ast.walk(tree):
        if problem := node_problem(node):
            return f"{what} {_short(text)} has {problem}"
    return None


def _sympy_node_problem(node: ast.AST) -> str | None:
    """sympify evaluates the text with sympy's namespace and Python's builtins: only sympy's own classes
    and values, symbols, numbers and name-like strings may appear (a string argument is sympified too)."""
    if isinstance(node, ast.Name):
        return None if node.id in _sympy_names() or _is_symbol(node.id) else f"name {node.id!r}"
    if isinstance(node, ast.Call):
        return None if isinstance(node.func, ast.Name) else "a call of a computed function"
    if isinstance(node, ast.keyword):
        return None if node.arg is not None else "a ** argument"
    if isinstance(node, ast.Constant):
        return _constant_problem(node.value, numeric_strings=True)  # Float('0.5', precision=53)
    return None if isinstance(node, _ARITHMETIC) else f"a {type(node).__name__}"


def _guard_node_problem(node: ast.AST) -> str | None:
    """Guards compare input sizes: L['x'].size()[0] <= 64, math.floor(...), max(...)."""
    if isinstance(node, ast.Name):
        return None if node.id in _GUARD_NAMES else f"name {node.id!r}"
    if isinstance(node, ast.Attribute):
        base = node.value.id if isinstance(node.value, ast.Name) else None
        ok = node.attr in _TENSOR_METHODS or (base, node.attr) in _GUARD_MODULE_ATTRS
        return None if ok else f"attribute {node.attr!r}"
    if isinstance(node, ast.Subscript):
        return None if isinstance(node.slice, ast.Constant) else "a computed subscript"
    if isinstance(node, ast.Call):
        return "a keyword argument" if node.keywords else None
    if isinstance(node, ast.Constant):
        return _constant_problem(node.value, numeric_strings=False)
    return None if isinstance(node, _ARITHMETIC) else f"a {type(node).__name__}"


def _constant_problem(value: Any, numeric_strings: bool) -> str | None:
    # numbers and booleans are inert; a string is sympified again by some sympy constructors and pasted
    # into generated code by others, so it must be a bare name (or a number where sympy writes those)
    if isinstance(value, str):
        plain = _IDENTIFIER.fullmatch(value) or (numeric_strings and _NUMBER.fullmatch(value))
        return None if plain else f"string {_short(value)}"
    return None if isinstance(value, (int, float, complex, type(None))) else f"constant {_short(value)}"


@lru_cache(maxsize=1)
def _sym_operators() -> frozenset[str]:
    """The Python functions the serializer writes by name (`_operator.add`, `torch.sym_max`, ...): the
    symbolic-size arithmetic of its _SYM_OPS, spelled as it spells them."""
    from torch._export.serde.serialize import _SYM_OPS

    return frozenset(f"{op.__module__}.{op.__name__}" for op in _SYM_OPS)


@lru_cache(maxsize=1)
def _sympy_names() -> frozenset[str]:
    """sympy's classes and singletons (Symbol, Integer, Mul, Max, oo, true, ...) and torch's sympy functions
    (FloorDiv, ...): constructing them from numbers, symbols and names runs nothing else."""
    import torch.utils._sympy.functions as torch_sympy

    def is_sympy(obj: Any) -> bool:
        return isinstance(obj, sympy.Basic) or (isinstance(obj, type) and issubclass(obj, sympy.Basic))

    names = {n for n in sympy.__all__ if is_sympy(getattr(sympy, n, None))}
    names |= {n for n in dir(torch_sympy) if not n.startswith("_") and is_sympy(getattr(torch_sympy, n))}
    names |= {"ExprCondPair"}  # written by srepr for Piecewise, not exported by sympy
    return frozenset(names)


def _is_symbol(name: str) -> bool:
    # a name sympify does not know becomes a Symbol; one it knows (a builtin, a sympy function) does not
    return bool(_SYMBOL.fullmatch(name)) and not hasattr(builtins, name) and name not in sympy.__all__ \
        and not keyword.iskeyword(name)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- running torch ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Every torch.load inside reads with weights_only=True, whatever torch passes (the second line of
    defence behind the pickle scan: it also covers the example inputs' weights_only=False fallback)."""
    saved = {k: os.environ.get(k) for k in (_FORCE_WEIGHTS_ONLY, _FORCE_NO_WEIGHTS_ONLY)}
    os.environ[_FORCE_WEIGHTS_ONLY] = "1"
    os.environ.pop(_FORCE_NO_WEIGHTS_ONLY, None)  # both set is an error in torch.load
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _torch_logs_kept() -> Iterator[list[logging.LogRecord]]:
    """What torch.export.load logs (a traceback before it raises for a broken archive) is kept here
    instead of printed: the caller reports the error in one line."""
    kept = _Kept()
    loggers = [logging.getLogger(n) for n in _TORCH_LOGGERS]
    saved = [(lg.handlers, lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        # torch gives some of its loggers a stderr handler of their own; and the failure is kept even
        # where torch's logging was turned down (the CLI does), since it names the cause
        lg.handlers, lg.propagate = [kept], False
        lg.setLevel(logging.WARNING)
    try:
        yield kept.records
    finally:
        for lg, (handlers, propagate, level) in zip(loggers, saved):
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
