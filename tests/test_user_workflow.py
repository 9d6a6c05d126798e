"""A user's whole workflow, done as a user does it (issue 12's "must show").

A CNN of the user's own, in a file of its own folder, pruned with torch.nn.utils.prune (random
unstructured weights, and whole output channels zeroed); `sr_ir.minimize` from Python; `save` to every
format; each file reloaded in a fresh process (the `.pt2`, `.py` and `.onnx` ones where sr_ir cannot be
imported) and compared with the original model at two batch sizes. Then the same through the CLI, run
from the model's folder (`sr-ir minimize mymodel:factory`), and with a rule directory of the user's
own (a `.sr` that uses its op reads back with `load(..., rules=DIR)` and `sr-ir show X.sr --rules DIR`).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sr_ir
from sr_ir.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
USER_RULES = ROOT / "examples" / "rules_ext"  # declares mish, which the bundled rules do not
SR_IR = Path(sys.executable).with_name("sr-ir")
BATCHES = (3, 7)  # neither is the batch the model was traced or minimized at
# float32 rounding: the minimized network sums fewer (and reordered) terms than the original
FLOAT32_REL = 5e-6

MODEL = '''\
"""The user's model: a small CNN, pruned the usual way."""
import torch
import torch.nn.utils.prune as prune
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.head(torch.flatten(self.pool(x), 1))


def factory():
    torch.manual_seed(0)
    model = SmallCNN()
    prune.random_unstructured(model.conv1, "weight", amount=0.4)
    prune.ln_structured(model.conv2, "weight", amount=3, n=1, dim=0)  # 3 whole output channels
    prune.custom_from_mask(model.conv2, "bias", model.conv2.weight_mask.flatten(1).amax(1))
    prune.random_unstructured(model.head, "weight", amount=0.3)
    return model.eval()


def example_inputs():
    return (torch.randn(4, 3, 8, 8),)
'''

MISH_MODEL = '''\
"""A model using an op the bundled rules do not know (mish): the user's rule directory declares it."""
import torch
from torch import nn


class MishMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 10)
        self.act = nn.Mish()
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def factory():
    torch.manual_seed(1)
    model = MishMLP()
    with torch.no_grad():  # rows 2 and 7 pruned away: mish(0) = 0 reaches fc2 as nothing
        model.fc1.weight[[2, 7]] = 0
        model.fc1.bias[[2, 7]] = 0
    return model.eval()


def example_inputs():
    return (torch.randn(4, 6),)
'''

# The prologue of a child that must run without sr_ir, as on a machine where only torch (and
# safetensors, onnxruntime) are installed: the venv has sr_ir as an editable install, so the child
# drops the repository from sys.path and refuses any `sr_ir` import outright.
WITHOUT_SR_IR = '''\
import os, sys
REPO = os.path.realpath(sys.argv[1])

class NoSrIr:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "sr_ir" or name.startswith("sr_ir."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoSrIr)
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != REPO]
try:
    import sr_ir
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("sr_ir is importable in the child")
WITH_SR_IR = False
'''

# Runs each listed file on the inputs and saves its outputs: argv = repo, inputs.pt, outputs.pt, files...;
# a .sr file may carry the user's rule directory as FILE=DIR.
CHILD = '''\
import importlib, torch
inputs = torch.load(sys.argv[2], weights_only=True)
outputs = {}
for f in sys.argv[4:]:
    f, _, rules = f.partition("=")
    if f.endswith(".pt2"):
        run = torch.export.load(f).module()
    elif f.endswith(".py"):
        sys.path.insert(0, os.path.dirname(f))
        run = importlib.import_module(os.path.basename(f)[:-3]).load()
    elif f.endswith(".onnx"):
        import onnxruntime as ort
        session = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
        run = lambda x, s=session: torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])
    else:  # .sr: sr_ir reads it back, with the user's rule directory where one is given
        run = sr_ir.emit(sr_ir.load(f, rules=rules or None), resolve_rules(rules or None))
    with torch.no_grad():
        for key, x in inputs.items():
            outputs[f"{os.path.basename(f)}/{key}"] = run(x)
if not WITH_SR_IR:
    assert not [m for m in sys.modules if m.split(".")[0] == "sr_ir"], "a file needed sr_ir"
torch.save(outputs, sys.argv[3])
'''

WITH_SR_IR = '''\
import os, sys
import sr_ir
from sr_ir.minimization.api import resolve_rules
WITH_SR_IR = True
'''


def _user_module(folder: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"user_{name}_{os.getpid()}", folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _child(files: list[str], inputs: Path, outputs: Path, *, with_sr_ir: bool) -> tuple[subprocess.Popen, Path]:
    """A fresh Python loading ``files`` (sr_ir importable or not) and saving their outputs to ``outputs``."""
    prologue = WITH_SR_IR if with_sr_ir else WITHOUT_SR_IR
    # -I: no PYTHONPATH, no user site, no current folder on sys.path, as a fresh `python` elsewhere
    proc = subprocess.Popen([sys.executable, "-I", "-c", prologue + CHILD, str(ROOT), str(inputs), str(outputs),
                             *files], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, outputs


def _finish(*children: tuple[subprocess.Popen, Path]) -> dict[str, torch.Tensor]:
    got: dict[str, torch.Tensor] = {}
    for proc, out in children:
        _, stderr = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"child failed:\n{stderr[-3000:]}"
        got.update(torch.load(out, weights_only=True))
    return got


def _inputs(folder: Path, shape: tuple[int, ...]) -> tuple[Path, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    xs = {f"batch{b}": torch.randn((b, *shape), generator=g) for b in BATCHES}
    path = folder / "inputs.pt"
    torch.save(xs, path)
    return path, xs


def _assert_matches(model: torch.nn.Module, xs: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                    files: list[str]) -> None:
    with torch.no_grad():
        want = {k: model(x) for k, x in xs.items()}
    for f in files:
        for k, w in want.items():
            y = got[f"{f}/{k}"]
            assert y.shape == w.shape, (f, k, y.shape)
            rel = float((y - w).abs().max() / w.abs().max())
            assert rel <= FLOAT32_REL, f"{f} at {k}: relative error {rel:.3g}"


def _cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen([str(SR_IR), *args], cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_minimize_save_every_format_reload_elsewhere_from_python_and_the_cli(tmp_path):
    pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnx, onnxscript, onnxruntime) is not installed")
    pytest.importorskip("onnxscript", reason="the [onnx] extra (onnx, onnxscript, onnxruntime) is not installed")
    (tmp_path / "mymodel.py").write_text(MODEL)
    cli_outs = ["cli.sr", "cli_py.py", "cli.pt2", "cli.onnx"]
    # the CLI as from a fresh shell in the model's folder: `mymodel` is found there, through no path of ours
    cli = _cli(["minimize", "mymodel:factory", "--quiet", *[a for o in cli_outs for a in ("-o", o)]], tmp_path)

    user = _user_module(tmp_path, "mymodel")
    model = user.factory()
    result = sr_ir.minimize(model, user.example_inputs())
    # the pruned channels are gone, and the result says so in one line
    assert result.report.kept_by_param["conv2.weight"] == [9, 8, 3, 3]
    assert result.report.kept_by_param["head.weight"] == [5, 9]
    assert "\n" not in repr(result) and repr(result).startswith("Minimized(params 1,165 -> 931 (1.3x), verified float64")

    out = tmp_path / "out"
    py_outs = ["small.sr", "standalone.py", "small.pt2", "small.onnx"]
    written = {f: result.save(out / f) for f in py_outs}
    assert written["small.sr"] == [out / "small.sr", out / "small.safetensors"]
    assert written["standalone.py"] == [out / "standalone.py", out / "standalone.safetensors"]
    assert sorted(os.listdir(out)) == ["small.onnx", "small.pt2", "small.safetensors", "small.sr",
                                       "standalone.py", "standalone.safetensors"]

    stdout, stderr = cli.communicate(timeout=300)
    assert cli.returncode == 0, stderr
    assert [ln for ln in stdout.splitlines() if ln.startswith("wrote ")] == [f"wrote {o}" for o in cli_outs]
    assert "conv2.weight" in stdout and "12x8x3x3" in stdout and "9x8x3x3" in stdout

    inputs, xs = _inputs(tmp_path, (3, 8, 8))
    files = [str(out / f) for f in py_outs] + [str(tmp_path / f) for f in cli_outs]
    got = _finish(_child([f for f in files if f.endswith(".sr")], inputs, tmp_path / "got_sr.pt", with_sr_ir=True),
                  _child([f for f in files if not f.endswith(".sr")], inputs, tmp_path / "got.pt", with_sr_ir=False))
    _assert_matches(model, xs, got, py_outs + cli_outs)


def test_a_user_rule_directory_all_the_way(tmp_path, capsys):
    (tmp_path / "mishmodel.py").write_text(MISH_MODEL)
    # the CLI, from the model's folder, with the user's rules: minimize to .sr, then read that .sr back
    cli = _cli(["minimize", "mishmodel:factory", "--rules", str(USER_RULES), "--quiet", "-o", "cli_mish.sr"], tmp_path)

    user = _user_module(tmp_path, "mishmodel")
    model = user.factory()
    with pytest.raises(sr_ir.UnsupportedOpError, match="aten.mish"):
        sr_ir.lower(model, user.example_inputs())  # the bundled rules do not know it
    assert any(n.op == "mish" for n in sr_ir.lower(model, user.example_inputs(), rules=USER_RULES).nodes)
    result = sr_ir.minimize(model, user.example_inputs(), rules=str(USER_RULES))
    assert result.report.kept_by_param["fc1.weight"] == [8, 6] and "mish.drop_channel" in result.report.rules_used
    result.save(tmp_path / "mish.sr")

    # without the rules the op is unknown: one line naming the file, line and column
    with pytest.raises(sr_ir.TypeCheckError, match=r"mish\.sr:\d+:\d+: unknown op 'mish'"):
        sr_ir.load(tmp_path / "mish.sr")
    assert sr_ir.load(tmp_path / "mish.sr", rules=USER_RULES).to_text() == result.program.to_text()

    stdout, stderr = cli.communicate(timeout=180)
    assert cli.returncode == 0, stderr
    assert main(["show", str(tmp_path / "cli_mish.sr"), "--rules", str(USER_RULES)]) == 0
    shown = capsys.readouterr().out
    assert "mish(" in shown and "# total: 83 parameters" in shown
    assert main(["show", str(tmp_path / "cli_mish.sr")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown op 'mish'" in err[0]

    inputs, xs = _inputs(tmp_path, (6,))
    files = [f"{tmp_path / 'mish.sr'}={USER_RULES}", f"{tmp_path / 'cli_mish.sr'}={USER_RULES}"]
    got = _finish(_child(files, inputs, tmp_path / "got.pt", with_sr_ir=True))
    _assert_matches(model, xs, got, ["mish.sr", "cli_mish.sr"])
