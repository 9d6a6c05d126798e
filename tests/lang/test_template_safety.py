"""A `torch "..."` template is Python text the emitter and the engine run: one that tries to run code is
refused when its rule file is loaded (library and CLI), before anything could run it. Each attack is
first shown to work when its text is evaluated as the engine would (it creates a marker file), so
the refusal is what keeps the marker away."""
import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sr_ir.backend.run import prelude_helpers
from sr_ir.cli.main import main
from sr_ir.errors import ParseError
from sr_ir.lang.loader import load_rules

# each creates the file M (replaced by the marker's path) when its text runs
ATTACKS = {
    "import": "__import__('os').system('touch M')",
    "open": "open('M', 'w').close()",
    "lambda": "(lambda: open('M', 'w'))()",
    "module builtins": "torch.__builtins__['open']('M', 'w')",
    "function globals": "F.relu.__globals__['__builtins__']['open']('M', 'w')",
    "operand class": "{x}.__class__.__repr__.__globals__['__builtins__']['open']('M', 'w')",
    "exec": "exec(\"open('M', 'w')\")",
    "getattr": "getattr(torch, 'save')({x}, 'M')",
    "f-string": "f\"{{open('M', 'w')}}\"",
    "walrus": "(f := open('M', 'w'))",
    "comprehension": "[open('M', 'w') for _ in [0]]",
    "torch.save": "torch.save({x}, 'M')",
    "numpy file": "{x}.numpy().tofile('M')",
}


def _run_as_the_engine_would(template: str) -> None:
    """sr_ir.backend.run evaluates a template with its fields replaced by names bound to the operands."""
    env = {"torch": torch, "F": F, "P": prelude_helpers(), "_v0": torch.ones(2, dtype=torch.float64)}
    eval(template.format(x="_v0"), env)  # noqa: S307 - the point: what an unchecked template would do


def _rule_dir(tmp_path: Path, template: str, kind: str = "op") -> Path:
    d = tmp_path / "evil"
    d.mkdir(exist_ok=True)
    head = "op evil(x: T[*B]) -> T[*B]" if kind == "op" else "function evil(x)"
    (d / "evil.rules").write_text(f"{head}\n  torch {json.dumps(template)}\n", encoding="utf-8")
    return d


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_runs_when_evaluated_unchecked(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "M"
    _run_as_the_engine_would(ATTACKS[name].replace("M", str(marker)))
    assert marker.exists(), "the attack must be real for its refusal to mean anything"


@pytest.mark.parametrize("kind", ["op", "function"])
@pytest.mark.parametrize("name", list(ATTACKS))
def test_loader_refuses_the_template_at_its_place(tmp_path, name, kind):
    marker = tmp_path / "M"
    d = _rule_dir(tmp_path, ATTACKS[name].replace("M", str(marker)), kind)
    with pytest.raises(ParseError) as e:
        load_rules(extra=[d])
    assert e.value.loc is not None and Path(e.value.loc.file).name == "evil.rules"
    assert e.value.loc.line == 2 and e.value.loc.col >= 9, str(e.value)
    assert "torch template" in e.value.message
    assert not marker.exists()


@pytest.mark.parametrize("name", list(ATTACKS))
def test_cli_refuses_the_rule_directory(tmp_path, name):
    marker = tmp_path / "M"
    d = _rule_dir(tmp_path, ATTACKS[name].replace("M", str(marker)))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["prove", "--check", "--rules", str(d)])
    assert rc == 3
    msg = err.getvalue()
    assert msg.count("\n") == 1 and "evil.rules:2:" in msg and "torch template" in msg, msg
    assert not marker.exists()


def test_error_points_at_the_offending_column(tmp_path):
    d = _rule_dir(tmp_path, "torch.relu({x}).__class__")
    with pytest.raises(ParseError) as e:
        load_rules(extra=[d])
    # `  torch "` is 9 characters: the template starts at column 10, `.__class__` 15 characters later
    assert (e.value.loc.line, e.value.loc.col) == (2, 10 + len("torch.relu({x})"))
    assert "__class__" in e.value.message


@pytest.mark.parametrize("template, why", [
    ("torch.relu({x}", "not one Python expression"),
    ("torch.relu({x}})", "braces are balanced"),
    ("torch.relu({y})", "uses {y}, which is not a declared operand"),
    ("torch.relu({x!r})", "is not `{name}`"),
    ("{x}; {x}", "not one Python expression"),
    ("torch.hub.load('a', 'b')", "one level deep"),
    ("torch.set_num_threads(1)", "process state"),
    ("P.no_such_helper({x})", "no prelude helper"),
    ("torch", "only read through its members"),
])
def test_malformed_templates_are_parse_errors(tmp_path, template, why):
    d = _rule_dir(tmp_path, template)
    with pytest.raises(ParseError, match=None) as e:
        load_rules(extra=[d])
    assert why in e.value.message, e.value.message
    assert e.value.loc.line == 2


def test_the_templates_the_library_uses_are_allowed(tmp_path):
    """Methods of values, namespaces one level deep, keywords, conditionals and lists all load."""
    d = _rule_dir(tmp_path, "torch.where({x} > 0, {x}, F.silu({x}).clamp_min(0.5)) "
                            "if torch.linalg.vector_norm({x}, 2.0, [-1], True).sum() > 0 else "
                            "torch.ops.aten.elu({x}, 1.0, 1.0, 1.0)[..., :1] * torch.tensor(2.0, dtype=torch.float64)")
    rs = load_rules(extra=[d])
    assert rs.ops["evil"].torch.startswith("torch.where(")
    assert len(load_rules().ops) >= 49  # and every bundled template loads
