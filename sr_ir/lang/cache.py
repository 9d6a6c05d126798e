"""A cache of loaded rule sets (sr_ir.lang.loader.load_rules), so that a process does not parse and check
every rule file again: `sr-ir prove --check` and the first `default_rules()` of a process read one file.

Where: ``$SR_IR_CACHE_DIR``, else ``$XDG_CACHE_HOME/sr-ir``, else ``~/.cache/sr-ir``; ``SR_IR_NO_CACHE=1``
turns the cache off. One file per set of rule directories (``rules-<hash of the directories>.json``),
holding the key it was written for: a hash of every rule file's name and bytes, of the sources the
loader and the classes it builds are made of (sr_ir/lang, sr_ir/ir, the grammar, the prelude), of the
sr-ir, lark and Python versions and of the format. A file whose key is not the one computed now is
stale and is rewritten after the rule files are loaded again; a file that cannot be read as a rule set
(corrupt, truncated, written by something else) is treated the same way, silently. Writes are atomic
(sr_ir.outputs); a folder that cannot be written just means no cache.

Why JSON and not pickle (issue 14: nothing in a data file can execute code). Unpickling calls whatever
callables the file names, and a file in a user-writable folder is as good as code; an HMAC would only
move the problem to a key file in the same folder, writable by the same user. The cache is therefore
plain JSON, which `json.loads` reads without running anything, in a tagged form this module rebuilds
into objects itself: lists, tuples, dicts, paths, fractions, and instances of the dataclasses of the
rule language's own modules (``_CLASS_MODULES``), created with ``object.__new__`` and given their
attributes directly, so that no constructor, ``__post_init__``, ``__setstate__`` or any other code
named by the file runs. Everything a rule set holds is such a value (the encoder refuses anything else,
and then there is no cache). A crafted file can at most describe a different rule set; the one part of
a rule set that becomes code, its ``torch`` templates, is checked again on every read exactly as the
loader checks it (sr_ir.lang.templates), so a cached set can emit nothing a rule file could not.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import os
import sys
from fractions import Fraction
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Callable

log = logging.getLogger("sr_ir.rules.cache")

FORMAT = "sr-ir rule set cache"
VERSION = 1
MAX_FILES = 32  # rule sets of other directories (user rule folders, test folders) beyond these go, oldest first

# The modules whose dataclasses a rule set is built from: the only classes a cache file may name
_CLASS_MODULES = ("sr_ir.errors", "sr_ir.ir.opdecl", "sr_ir.lang.ast", "sr_ir.lang.rule", "sr_ir.lang.functions",
                  "sr_ir.lang.loader", "sr_ir.lang.recurrence")
# What the parsed and checked rule set depends on besides the rule files: code and data of the package
_PACKAGE = Path(__file__).resolve().parent.parent
_SOURCES = ("lang/*.py", "ir/*.py", "errors.py", "syntax.py", "resources.py", "nn/functional.py", "__init__.py")

# tags of encoded values (every other JSON value is itself: str, int, float, bool, null)
_LIST, _TUPLE, _DICT, _PATH, _FRACTION, _REF, _OBJECT = range(7)


class _Unusable(Exception):
    """The cache file is not a rule set this process can use (corrupt, foreign, or of another version)."""


def cache_dir() -> Path | None:
    """The cache folder, or None when the cache is off (SR_IR_NO_CACHE set to anything but '' or '0')."""
    if os.environ.get("SR_IR_NO_CACHE", "") not in ("", "0"):
        return None
    explicit = os.environ.get("SR_IR_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "sr-ir"


@lru_cache(maxsize=1)
def _code_hash() -> str:
    """A hash of everything besides the rule files that decides what loading them gives."""
    import lark

    from .. import __version__
    from ..resources import data_dir

    h = hashlib.sha256(f"{FORMAT} {VERSION} {__version__} lark {lark.__version__} {sys.version}".encode())
    files = [f for pattern in _SOURCES for f in sorted(_PACKAGE.glob(pattern))]
    for name in ("grammar", "prelude"):
        files += sorted(p for p in data_dir(name).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for f in files:
        h.update(b"\0" + str(f.relative_to(f.parent.parent)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


class Slot:
    """The cache file of one list of rule directories: `read` a rule set from it, `write` one to it."""

    def __init__(self, path: Path, key_of: Callable[[], str]):
        self.path = path
        self._key_of = key_of
        self.key = key_of()

    @staticmethod
    def of(roots: list[Path], files_of: Callable[[Path], list[Path]], display: Callable[[Path], str]) -> Slot | None:
        """The slot of `roots` (in load order), or None when the cache is off or the roots cannot be
        listed (the loader then reports why itself)."""
        folder = cache_dir()
        if folder is None:
            return None
        try:
            ident = hashlib.sha256(repr([(str(r), str(r.resolve()), display(r)) for r in roots]).encode()).hexdigest()

            def key() -> str:
                h = hashlib.sha256(_code_hash().encode())
                for r in roots:
                    h.update(f"\0root {r}\0{r.resolve()}\0{r.is_dir()}".encode())
                    for f in files_of(r):
                        h.update(f"\0file {f}\0{display(f)}\0".encode() + hashlib.sha256(f.read_bytes()).digest())
                return h.hexdigest()

            return Slot(folder / f"rules-{ident[:32]}.json", key)
        except Exception as e:  # a missing directory, an unreadable file: no cache; loading says what is wrong
            log.debug("rule cache: not used (%s)", e)
            return None

    def read(self) -> Any | None:
        """The cached rule set, or None (no file, another key, or a file that is not one of ours)."""
        try:
            text = self.path.read_bytes()
        except OSError:
            log.info("rule cache: miss (%s)", self.path)
            return None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
                raise _Unusable("not a cache file of this version")
            if doc.get("key") != self.key:
                log.info("rule cache: stale, the rule files or sr-ir changed (%s)", self.path)
                return None
            rs = decode(doc)
            _check_templates(rs)
        except Exception as e:  # whatever is wrong with the file, it is rebuilt: never an error
            log.info("rule cache: unusable, rebuilt (%s: %s)", self.path, e)
            return None
        log.info("rule cache: hit (%s)", self.path)
        return rs

    def write(self, rs: Any) -> None:
        """Store `rs`, unless a rule file changed while it was loaded (then its key is not `self.key`)."""
        from ..outputs import atomic_write

        try:
            if self._key_of() != self.key:
                log.info("rule cache: a rule file changed while it was read; not written")
                return
            data = json.dumps(encode(rs, self.key), separators=(",", ":"), allow_nan=True)
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(self.path, data)
            _prune(self.path.parent, keep=self.path)
            log.info("rule cache: written (%s)", self.path)
        except Exception as e:  # a read-only or full disk, a value the encoder does not know: no cache
            log.info("rule cache: not written (%s)", e)


def _prune(folder: Path, keep: Path) -> None:
    """At most MAX_FILES cache files, `keep` (the one just written) among them: the least recently
    written others go."""
    others = []
    for p in folder.glob("rules-*.json"):
        try:
            if p != keep:
                others.append((p.stat().st_mtime_ns, str(p)))
        except OSError:  # removed meanwhile by another process
            continue
    others.sort(reverse=True)
    for _, p in others[max(MAX_FILES - 1, 0):]:
        Path(p).unlink(missing_ok=True)


@lru_cache(maxsize=1)
def _classes() -> dict[str, type]:
    """'module:qualname' -> class, for every dataclass defined in _CLASS_MODULES (and nothing else)."""
    out: dict[str, type] = {}
    for name in _CLASS_MODULES:
        mod = importlib.import_module(name)
        for v in vars(mod).values():
            if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == name:
                out[f"{name}:{v.__qualname__}"] = v
    return out


def encode(root: Any, key: str) -> dict:
    """The JSON document of `root` (shared objects stay shared: a second sight is a reference)."""
    known = {cls: name for name, cls in _classes().items()}
    table: dict[type, tuple[int, list[str]]] = {}
    seen: dict[int, int] = {}  # id(object) -> its number, in the order objects are first met
    keep: list[Any] = []  # the objects numbered, alive until the end (so that no id is reused)

    def enc(x: Any) -> Any:
        t = type(x)
        if t is str or t is int or t is float or t is bool or x is None:
            return x
        if t is list:
            return [_LIST, *map(enc, x)]
        if t is tuple:
            return [_TUPLE, *map(enc, x)]
        if t is dict:
            out: list[Any] = [_DICT]
            for k, v in x.items():
                out += (enc(k), enc(v))
            return out
        if isinstance(x, PurePath):
            return [_PATH, str(x)]
        if t is Fraction:
            return [_FRACTION, x.numerator, x.denominator]
        if t in known:
            n = seen.get(id(x))
            if n is not None:
                return [_REF, n]
            seen[id(x)] = len(keep)
            keep.append(x)
            attrs = list(vars(x))
            if t not in table:
                table[t] = (len(table), attrs)
            index, names = table[t]
            if attrs != names:
                raise TypeError(f"{t.__qualname__} objects with different attributes ({attrs} and {names})")
            return [_OBJECT, index, *(enc(v) for v in vars(x).values())]
        raise TypeError(f"a rule set holds a {t.__module__}.{t.__qualname__}, which the cache does not store")

    data = enc(root)
    classes = [[known[cls], names] for cls, (_, names) in sorted(table.items(), key=lambda kv: kv[1][0])]
    return {"format": FORMAT, "version": VERSION, "key": key, "classes": classes, "data": data}


def decode(doc: dict) -> Any:
    """The rule set of a document `encode` wrote; _Unusable (or any error) if it is not one."""
    from .loader import RuleSet

    registry = _classes()
    classes: list[tuple[type, list[str]]] = []
    for entry in doc["classes"]:
        name, attrs = entry
        cls = registry.get(name) if isinstance(name, str) else None
        if cls is None:
            raise _Unusable(f"names a class the cache may not make: {name!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        if (not isinstance(attrs, list) or not all(type(a) is str for a in attrs) or len(set(attrs)) != len(attrs)
                or not fields <= set(attrs)
                or any(a not in fields and (not a.isidentifier() or a.startswith("__")) for a in attrs)):
            raise _Unusable(f"attributes {attrs!r} do not fit {name}")
        classes.append((cls, attrs))
    objects: list[Any] = []

    def dec(x: Any) -> Any:
        t = type(x)
        if t is not list:
            if t is dict:
                raise _Unusable("an untagged JSON object")
            return x
        tag = x[0]
        if tag == _LIST:
            return [dec(v) for v in x[1:]]
        if tag == _TUPLE:
            return tuple(dec(v) for v in x[1:])
        if tag == _DICT:
            out = {}
            for i in range(1, len(x) - 1, 2):
                out[dec(x[i])] = dec(x[i + 1])
            if len(x) % 2 == 0:
                raise _Unusable("a dict with a key and no value")
            return out
        if tag == _PATH and len(x) == 2 and type(x[1]) is str:
            return Path(x[1])
        if tag == _FRACTION and len(x) == 3 and type(x[1]) is int and type(x[2]) is int and x[2] > 0:
            return Fraction(x[1], x[2])
        if tag == _REF and len(x) == 2 and type(x[1]) is int and 0 <= x[1] < len(objects):
            return objects[x[1]]
        if tag == _OBJECT and type(x[1]) is int and 0 <= x[1] < len(classes):
            cls, attrs = classes[x[1]]
            if len(x) != 2 + len(attrs):
                raise _Unusable(f"a {cls.__qualname__} with {len(x) - 2} values for {len(attrs)} attributes")
            obj = object.__new__(cls)  # no __init__ or __post_init__: the attributes are restored as written
            objects.append(obj)  # numbered before its parts, as encode numbers them
            vars(obj).update(zip(attrs, map(dec, x[2:])))
            return obj
        raise _Unusable(f"an unknown value {json.dumps(x)[:60]}")

    rs = dec(doc["data"])
    if type(rs) is not RuleSet:
        raise _Unusable("not a rule set")
    return rs


def _check_templates(rs: Any) -> None:
    """Every template of the set (an op's `torch` and `module`, a function's `torch`) passes the
    loader's check (sr_ir.lang.templates): what a cache file says becomes generated code only if a rule
    file could have said it."""
    from .templates import FUNCTION_NAMESPACES, check_module_template

    for name, decl in rs.ops.items():
        if decl.torch is not None:
            _template(decl.torch, decl.loc).check(f"op {name!r}", decl.param_names,
                                                  [t.name for t in decl.tensor_params if t.variadic])
        module = getattr(decl, "module", None)
        if module is not None:
            t = _template(module.text, module.loc)
            if type(module.holds) is not tuple or not all(type(h) is str for h in module.holds):
                raise _Unusable(f"op {name!r}: a module template's operands that are not names")
            check_module_template(decl, t.text, module.holds, t.loc, t.raw)
    for name, f in rs.functions.items():
        if f.torch is not None:
            _template(f.torch, f.loc).check(f"function {name!r}", f.params, namespaces=FUNCTION_NAMESPACES,
                                            fields_are="a parameter")


def _template(text: Any, loc: Any):
    """The loader's own template object, so the check is the very one a rule file's template goes through."""
    from ..errors import Loc
    from .loader import _Template

    if type(text) is not str:
        raise _Unusable("a template that is not text")
    return _Template(text, loc if isinstance(loc, Loc) else Loc("<cache>", 0, 0), json.dumps(text))
