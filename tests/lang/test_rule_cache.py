"""The rule-set cache (sr_ir.lang.cache): a hit is the same rule set, edits make it stale, a corrupt or
crafted file is rebuilt silently and nothing in it runs."""
from __future__ import annotations

import json
import logging
import pickle
from contextlib import contextmanager
from pathlib import Path

import pytest

from sr_ir.errors import ParseError, TypeCheckError
from sr_ir.lang import cache as C
from sr_ir.lang import loader
from sr_ir.lang.loader import load_rules
from sr_ir.resources import data_dir

OPS = data_dir("rules") / "ops"
RULE = """
rule t.fold_const
  match y = linear(x: [*B, n], weight, bias)
  where x[*B, c] == k
  then  y = linear(drop(x, -1, c), drop(weight, 1, c), bias + k * weight[:, c])
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SR_IR_CACHE_DIR", str(d))
    monkeypatch.delenv("SR_IR_NO_CACHE", raising=False)
    return d


@pytest.fixture
def rule_dir(tmp_path) -> Path:
    d = tmp_path / "r"
    d.mkdir()
    (d / "t.rules").write_text(RULE)
    return d


def _uncached(*args, **kw):
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SR_IR_NO_CACHE", "1")
        return load_rules(*args, **kw)


@contextmanager
def _no_parse():
    """Loading from the files fails the test inside: what load_rules returns came from the cache."""
    def fail(*a, **k):
        raise AssertionError("the rule files were parsed again")

    with pytest.MonkeyPatch.context() as m:
        m.setattr(loader, "_load_rules", fail)
        yield


def _same(a, b) -> None:
    assert list(a.ops) == list(b.ops) and a.ops == b.ops
    assert [r.name for r in a.rules] == [r.name for r in b.rules] and a.rules == b.rules
    assert {n: d.torch for n, d in a.ops.items()} == {n: d.torch for n, d in b.ops.items()}  # the templates
    assert {n: f.torch for n, f in a.functions.items()} == {n: f.torch for n, f in b.functions.items()}
    assert a.functions == b.functions and a.axioms == b.axioms
    assert a.items == b.items and a.files == b.files
    assert [r.text() for r in a.rules] == [r.text() for r in b.rules]


def _only_file(cache: Path) -> Path:
    files = list(cache.glob("rules-*.json"))
    assert len(files) == 1, files
    return files[0]


def test_hit_is_the_same_rule_set(cache):
    first = load_rules()  # a miss: parsed, checked, written
    assert _only_file(cache).stat().st_size > 0
    with _no_parse():
        hit = load_rules()
    _same(hit, first)  # the miss returned what the rule files gave
    # shared objects stay shared: one vocabulary for the set and its rules, one OpDecl per op
    assert all(r.vocabulary is hit.vocabulary for r in hit.rules)
    assert all(any(i is d for i in hit.items) for d in hit.ops.values())
    # a fresh object per load (a caller that changes its set does not change the next one's)
    assert load_rules() is not hit and load_rules().ops["linear"] is not hit.ops["linear"]


def test_editing_a_rule_file_makes_the_cache_stale(cache, rule_dir):
    a = load_rules([OPS], extra=[rule_dir])
    assert [r.name for r in a.rules] == ["t.fold_const"]
    path = _only_file(cache)
    key = json.loads(path.read_text())["key"]
    (rule_dir / "t.rules").write_text(RULE.replace("t.fold_const", "t.renamed"))
    b = load_rules([OPS], extra=[rule_dir])
    assert [r.name for r in b.rules] == ["t.renamed"]
    assert _only_file(cache) == path and json.loads(path.read_text())["key"] != key  # rewritten in place
    with _no_parse():
        _same(load_rules([OPS], extra=[rule_dir]), b)
    # a new file in a directory is an edit too (the key lists the files)
    (rule_dir / "u.rules").write_text(RULE.replace("t.fold_const", "t.second"))
    assert {r.name for r in load_rules([OPS], extra=[rule_dir]).rules} == {"t.renamed", "t.second"}


def test_a_change_of_the_code_makes_the_cache_stale(cache, rule_dir, monkeypatch):
    load_rules([OPS], extra=[rule_dir])
    monkeypatch.setattr(C, "_code_hash", lambda: "another sr-ir")
    calls = []
    real = loader._load_rules
    monkeypatch.setattr(loader, "_load_rules", lambda *a: calls.append(1) or real(*a))
    load_rules([OPS], extra=[rule_dir])
    assert calls == [1]


@pytest.mark.parametrize("content", [
    b"", b"not json", b"{\"format\": 1}", b"[1, 2, 3]", b"\xff\xfe\x00garbage",
    b"{\"format\": \"sr-ir rule set cache\", \"version\": 1, \"key\": \"x\"",  # truncated
])
def test_a_corrupt_cache_file_is_rebuilt_silently(cache, rule_dir, content, caplog):
    good = _uncached([OPS], extra=[rule_dir])
    load_rules([OPS], extra=[rule_dir])
    path = _only_file(cache)
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        again = load_rules([OPS], extra=[rule_dir])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    _same(again, good)
    assert json.loads(path.read_text())["format"] == C.FORMAT  # and written again


def _valid_doc(cache: Path, rule_dir: Path) -> tuple[Path, dict]:
    load_rules([OPS], extra=[rule_dir])
    path = _only_file(cache)
    return path, json.loads(path.read_text())


def test_a_damaged_document_with_the_right_key_is_rebuilt(cache, rule_dir):
    good = _uncached([OPS], extra=[rule_dir])
    path, doc = _valid_doc(cache, rule_dir)
    damaged = [
        {**doc, "data": [C._REF, 10**6]},  # a reference to nothing
        {**doc, "data": [C._OBJECT, 10**6]},  # a class that is not in the table
        {**doc, "data": {"a": 1}},  # an untagged object
        {**doc, "data": [C._LIST, 1, 2]},  # not a rule set
        {**doc, "classes": [[name, attrs[:-1]] for name, attrs in doc["classes"]]},  # a field missing
        {**doc, "classes": [[name, [*attrs, "__class__"]] for name, attrs in doc["classes"]]},
        {**doc, "version": C.VERSION + 1},
    ]
    for d in damaged:
        path.write_text(json.dumps(d))
        _same(load_rules([OPS], extra=[rule_dir]), good)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, (f"touch {_Boom.target}",))


def test_a_crafted_cache_file_executes_nothing(cache, rule_dir, tmp_path):
    """A pickle, a document naming callables, and a template that would run a shell: none of it runs,
    and the rule set loaded is the rule files' own."""
    good = _uncached([OPS], extra=[rule_dir])
    path, doc = _valid_doc(cache, rule_dir)
    sentinel = tmp_path / "pwned"
    _Boom.target = sentinel
    # 1. a pickle that runs a command when unpickled
    path.write_bytes(pickle.dumps(_Boom()))
    _same(load_rules([OPS], extra=[rule_dir]), good)
    # 2. the right key, naming callables as classes (builtins, os, a module outside the rule language)
    for name in ("builtins:eval", "os:system", "subprocess:Popen", "sr_ir.lang.cache:Slot", "pathlib:Path"):
        crafted = {**doc, "classes": [[name, ["args"]]], "data": [C._OBJECT, 0, f"touch {sentinel}"]}
        path.write_text(json.dumps(crafted))
        _same(load_rules([OPS], extra=[rule_dir]), good)
    # 3. the right key and a well-formed rule set whose op template would run a shell when emitted:
    # the templates are checked on every read as the loader checks them, so the file is rebuilt
    text = json.dumps(doc)
    template = good.ops["linear"].torch
    assert json.dumps(template) in text
    evil = f"__import__('os').system('touch {sentinel}')"
    path.write_text(text.replace(json.dumps(template), json.dumps(evil)))
    assert C.Slot.of([OPS, rule_dir], lambda r: loader.rule_files([r]), loader._display).read() is None
    rs = load_rules([OPS], extra=[rule_dir])
    assert rs.ops["linear"].torch == template
    _same(rs, good)
    # 4. the same with the layer an op is emitted as (`module "nn.Linear(...)"`)
    module = getattr(good.ops["linear"], "module", None)
    if module is not None:
        text = json.dumps(json.loads(path.read_text()))
        assert json.dumps(module.text) in text
        path.write_text(text.replace(json.dumps(module.text), json.dumps(f"nn.Linear({{n}}, {{m}}) or {evil}")))
        rs = load_rules([OPS], extra=[rule_dir])
        assert rs.ops["linear"].module == module
        _same(rs, good)
    assert not sentinel.exists()


def test_no_cache_and_cache_locations(tmp_path, monkeypatch, rule_dir):
    monkeypatch.delenv("SR_IR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("SR_IR_NO_CACHE", raising=False)
    assert C.cache_dir() == tmp_path / "xdg" / "sr-ir"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert C.cache_dir() == tmp_path / "home" / ".cache" / "sr-ir"
    monkeypatch.setenv("SR_IR_CACHE_DIR", str(tmp_path / "mine"))
    assert C.cache_dir() == tmp_path / "mine"
    for off in ("1", "yes"):
        monkeypatch.setenv("SR_IR_NO_CACHE", off)
        assert C.cache_dir() is None
        load_rules([OPS], extra=[rule_dir])
        assert not (tmp_path / "mine").exists()
    monkeypatch.setenv("SR_IR_NO_CACHE", "0")
    load_rules([OPS], extra=[rule_dir])
    assert len(list((tmp_path / "mine").glob("rules-*.json"))) == 1


def test_an_unwritable_cache_folder_is_no_error(tmp_path, monkeypatch, rule_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SR_IR_CACHE_DIR", str(blocker / "sub"))  # cannot be made: its parent is a file
    monkeypatch.delenv("SR_IR_NO_CACHE", raising=False)
    _same(load_rules([OPS], extra=[rule_dir]), _uncached([OPS], extra=[rule_dir]))


def test_errors_are_reported_and_not_cached(cache, rule_dir):
    (rule_dir / "t.rules").write_text(RULE.replace("match y = linear(", "match y = nosuchop("))
    with pytest.raises(TypeCheckError, match="unknown op 'nosuchop'") as e:
        load_rules([OPS], extra=[rule_dir])
    assert "t.rules:2:1" in str(e.value)
    assert not list(cache.glob("rules-*.json"))
    with pytest.raises(ParseError, match="no such rule file or directory"):
        load_rules([OPS], extra=[rule_dir / "missing"])


def test_old_cache_files_are_pruned(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(C, "MAX_FILES", 2)
    for i in range(4):
        d = tmp_path / f"r{i}"
        d.mkdir()
        (d / "t.rules").write_text(RULE.replace("t.fold_const", f"t.r{i}"))
        load_rules([OPS], extra=[d])
    assert len(list(cache.glob("rules-*.json"))) == 2
