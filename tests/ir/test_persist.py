"""Saving a program as text + safetensors: one transaction, whatever interrupts it, and tied weights."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import sr_ir.ir.persist as persist
from sr_ir.errors import SrIrError
from sr_ir.ir.parser import parse
from sr_ir.ir.persist import PAIR_KEY, load, pair_id, weights_path


def program(out_features: int, seed: int):
    """A one-layer program; different ``out_features`` give different texts, different seeds different weights."""
    p = parse(f"""graph m(%x: f32[N, 4]) -> (f32[N, {out_features}]) {{
  param @fc.weight: f32[{out_features}, 4]
  param @fc.bias: f32[{out_features}]
  %0 = linear(%x, @fc.weight, @fc.bias) : f32[N, {out_features}]
  return %0
}}
""", "m.sr")
    g = torch.Generator().manual_seed(seed)
    p.weights = {"fc.weight": torch.randn(out_features, 4, generator=g), "fc.bias": torch.randn(out_features, generator=g)}
    return p


A, B = program(3, 1), program(5, 2)


def which(path) -> str:
    """'A' or 'B': the program ``load(path)`` gives, compared weight by weight."""
    got = load(path)
    for name, p in (("A", A), ("B", B)):
        if got.to_text() == p.to_text() and all(torch.equal(got.weights[k], p.weights[k]) for k in p.params):
            return name
    raise AssertionError("loaded neither A nor B")


def leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith((".sr-ir-tmp.", ".sr-ir-next.")))


def test_save_writes_a_pair_the_parser_reads(tmp_path):
    A.save(tmp_path / "m.sr")
    text = (tmp_path / "m.sr").read_text()
    pair = pair_id(A.to_text())
    assert text == f"# sr-ir pair {pair}\n" + A.to_text()  # a comment line, then the canonical text
    assert parse(text, "m.sr").to_text() == A.to_text()
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert f.metadata()[PAIR_KEY] == pair
    assert which(tmp_path / "m.sr") == "A"
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors", "m.sr"]


class Interrupt:
    """Raise KeyboardInterrupt at the k-th call of any of the file-system steps a save makes."""

    STEPS = [(os, "open"), (os, "close"), (os, "replace"), (os, "fsync"), (os, "chmod"), (os, "mkdir"),
             (persist, "save_file")]

    def __init__(self, monkeypatch, at: int | None):
        self.calls, self.at = 0, at
        for owner, name in self.STEPS:
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))

    def _wrap(self, fn):
        def step(*args, **kwargs):
            if self.at is not None:
                self.calls += 1
                if self.calls == self.at:
                    self.at = None
                    raise KeyboardInterrupt
            return fn(*args, **kwargs)
        return step


def test_an_overwrite_interrupted_at_any_step_leaves_the_old_or_the_new_pair(tmp_path, monkeypatch):
    path = tmp_path / "m.sr"
    with monkeypatch.context() as m:
        counter = Interrupt(m, at=10**9)
        B.save(path)
        steps = counter.calls
    assert steps > 10
    outcomes = []
    for k in range(1, steps + 1):
        A.save(path)
        assert leftovers(tmp_path) == []  # whatever the last interrupted save left, this one removed
        with monkeypatch.context() as m:
            Interrupt(m, at=k)
            with pytest.raises(KeyboardInterrupt):
                B.save(path)
        # between the weights' rename and the text's, the file on disk is still A's text
        half_done = path.read_text() == f"# sr-ir pair {pair_id(A.to_text())}\n{A.to_text()}" and \
            (tmp_path / f".sr-ir-next.{pair_id(B.to_text())}.m.sr").is_file()
        outcomes.append((which(path), half_done))
    got = [o for o, _ in outcomes]
    assert got[0] == "A" and got[-1] == "B"
    assert ("B", True) in outcomes  # the interrupted state that needs the next text was reached, and loads as B
    assert path.read_text().startswith(f"# sr-ir pair {pair_id(B.to_text())}")  # and load moved it into place
    A.save(path)
    assert leftovers(tmp_path) == [] and which(path) == "A"


def _overwrite_forever(path) -> None:
    try:
        while True:
            A.save(path)
            B.save(path)
    finally:
        os._exit(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kill_9_during_overwrites_leaves_a_pair_that_loads(tmp_path):
    path = tmp_path / "m.sr"
    A.save(path)
    rng = random.Random(0)
    for _ in range(6):
        pid = os.fork()
        if pid == 0:
            _overwrite_forever(path)
        time.sleep(rng.uniform(0.01, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert which(path) in ("A", "B")
    B.save(path)  # the killed writers' temporary files go when the next save starts
    assert leftovers(tmp_path) == [] and which(path) == "B"


def test_concurrent_writers_and_a_reader_never_mix_pairs(tmp_path):
    path = tmp_path / "m.sr"
    A.save(path)
    seen, errors = set(), []

    def write(p):
        for _ in range(15):
            p.save(path)

    def read():
        while any(t.is_alive() for t in writers):
            try:
                seen.add(which(path))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

    writers = [threading.Thread(target=write, args=(p,)) for p in (A, B)]
    reader = threading.Thread(target=read)
    for t in writers + [reader]:
        t.start()
    for t in writers + [reader]:
        t.join()
    assert errors == [] and seen <= {"A", "B"} and seen
    assert which(path) in ("A", "B") and leftovers(tmp_path) == []


def test_a_mismatched_pair_is_a_one_line_error(tmp_path):
    A.save(tmp_path / "a" / "m.sr")
    B.save(tmp_path / "b" / "m.sr")
    shutil.copy(tmp_path / "b" / "m.safetensors", tmp_path / "a" / "m.safetensors")
    with pytest.raises(SrIrError) as e:
        load(tmp_path / "a" / "m.sr")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "a" / "m.sr") in msg and str(tmp_path / "a" / "m.safetensors") in msg
    # weights saved without an id (another tool) beside a text with one: refused as well
    save_file({k: v.contiguous() for k, v in A.weights.items()}, str(tmp_path / "a" / "m.safetensors"))
    with pytest.raises(SrIrError, match="were not saved together"):
        load(tmp_path / "a" / "m.sr")


def test_files_of_the_old_layout_still_load(tmp_path):
    (tmp_path / "m.sr").write_text(A.to_text())  # no pair line, weights without metadata
    save_file({k: v.contiguous() for k, v in A.weights.items()}, str(tmp_path / "m.safetensors"))
    assert which(tmp_path / "m.sr") == "A"
    A.save(tmp_path / "m.sr")  # a new save over them
    (tmp_path / "m.sr").write_text(A.to_text())  # its text without the pair line is still the one saved
    assert which(tmp_path / "m.sr") == "A"


def test_tied_and_overlapping_weights_save_and_load(tmp_path):
    p = parse("""graph tied(%x: i64[N]) -> (f32[N, 4], f32[N, 4]) {
  param @embed.weight: f32[6, 4]
  param @head.weight: f32[6, 4]
  param @first_rows: f32[2, 4]
  %0 = embedding(@embed.weight, %x) : f32[N, 4]
  %1 = embedding(@head.weight, %x) : f32[N, 4]
  return %0, %1
}
""", "tied.sr")
    shared = torch.randn(6, 4)
    p.weights = {"embed.weight": shared, "head.weight": shared, "first_rows": shared[:2]}
    p.save(tmp_path / "tied.sr")
    with safe_open(str(tmp_path / "tied.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == ["embed.weight", "first_rows"]  # the tie is stored once
        assert json.loads(f.metadata()[persist.ALIASES_KEY]) == {"head.weight": "embed.weight"}
    q = load(tmp_path / "tied.sr")
    assert set(q.weights) == {"embed.weight", "head.weight", "first_rows"}
    assert all(torch.equal(q.weights[k], p.weights[k]) for k in p.weights)
    assert q.weights["head.weight"].data_ptr() == q.weights["embed.weight"].data_ptr()  # tied again


def test_a_folder_as_target_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "x.sr").mkdir()
    with pytest.raises(SrIrError, match="is a folder"):
        A.save(tmp_path / "x.sr")
    (tmp_path / "y.safetensors").mkdir()
    with pytest.raises(SrIrError, match="y.safetensors: is a folder"):
        A.save(tmp_path / "y.sr")
    with pytest.raises(SrIrError, match="use .sr"):
        A.save(tmp_path / "z.safetensors")  # the text and its weights would be one file
    assert sorted(os.listdir(tmp_path)) == ["x.sr", "y.safetensors"]
    assert os.listdir(tmp_path / "x.sr") == [] and os.listdir(tmp_path / "y.safetensors") == []


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_get_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        A.save(tmp_path / "m.sr")
    finally:
        os.umask(old)
    for name in ("m.sr", "m.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_weights_path_is_the_conventional_name():
    assert str(weights_path("dir/model.sr")) == os.path.join("dir", "model.safetensors")


def test_a_torn_weights_file_is_a_one_line_error(tmp_path):
    A.save(tmp_path / "m.sr")
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SrIrError, match="not a readable safetensors file") as e:
        load(tmp_path / "m.sr")
    assert "\n" not in str(e.value)


USER_RULES = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "rules_ext")  # declares mish


def test_a_program_using_a_user_op_loads_with_its_rule_directory(tmp_path):
    from sr_ir.errors import TypeCheckError
    from sr_ir.lang.loader import load_rules

    path = tmp_path / "m.sr"
    path.write_text("graph m(%x: f32[N, 4]) -> (f32[N, 4]) {\n  %0 = mish(%x) : f32[N, 4]\n  return %0\n}\n")
    with pytest.raises(TypeCheckError, match=r"m\.sr:2:3: unknown op 'mish'"):
        load(path)
    for rules in (USER_RULES, [USER_RULES], load_rules(extra=[USER_RULES])):
        assert [n.op for n in load(path, rules=rules).nodes] == ["mish"]
    with pytest.raises(SrIrError) as e:
        load(path, rules=tmp_path / "no_such_rules")
    assert "no_such_rules" in str(e.value) and "\n" not in str(e.value)
