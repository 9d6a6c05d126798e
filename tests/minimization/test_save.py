"""`Minimized.save` by suffix, one-line `repr`, `str(report)`, and the public API of the package."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

import sr_ir
from sr_ir.backend.export import save_python
from sr_ir.errors import SrIrError
from sr_ir.ir.persist import PAIR_KEY, PYTHON_KEY

ROOT = Path(__file__).resolve().parents[2]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.fc2 = nn.Linear(6, 6)
        self.fc3 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.tanh(self.fc2(torch.relu(self.fc1(x)))))


@pytest.fixture(scope="module")
def result():
    torch.manual_seed(0)
    model = MLP().eval()
    with torch.no_grad():  # rows 1 and 4 of fc1 pruned
        model.fc1.weight[[1, 4]] = 0
        model.fc1.bias[[1, 4]] = 0
    x = torch.randn(3, 5)
    return model, sr_ir.minimize(model, (x,))


def test_repr_is_one_short_line_and_str_of_the_report_is_its_table(result):
    _, r = result
    rep = r.report
    text = repr(r)
    v = rep.verification["float64"]["max_rel"]
    assert text == (f"Minimized(params {rep.params_before:,} -> {rep.params_after:,} ({rep.ratio:.1f}x), "
                    f"verified float64 rel err {v:.2g})")
    assert (rep.params_before, rep.params_after) == (36 + 42 + 21, 24 + 30 + 21)
    assert str(rep) == rep.table() and "parameter" in str(rep).splitlines()[0]
    assert "\n" not in repr(rep) and len(repr(rep)) < 100 and "tensor" not in repr(rep)


def test_repr_of_an_unverified_result():
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    r = sr_ir.minimize(model, (torch.randn(2, 3),), verify=False)
    assert repr(r) == "Minimized(params 8 -> 8 (1.0x), not verified)"


def test_unknown_suffix_is_one_line_and_writes_nothing(result, tmp_path):
    _, r = result
    for name in ("model.pth", "model"):
        with pytest.raises(SrIrError) as e:
            r.save(tmp_path / name)
        assert "\n" not in str(e.value) and ".pt2, .onnx, .sr, .py" in str(e.value)
    with pytest.raises(SrIrError, match="is a folder"):
        (tmp_path / "d.pt2").mkdir()
        r.save(tmp_path / "d.pt2")
    assert sorted(os.listdir(tmp_path)) == ["d.pt2"]


def test_py_is_standalone_source_with_a_loader(result, tmp_path):
    model, r = result
    written = r.save(tmp_path / "small.py")
    assert written == [tmp_path / "small.py", tmp_path / "small.safetensors"]
    src = (tmp_path / "small.py").read_text()
    assert "sr_ir" not in src.replace("sr_ir.aliases", "")  # nothing of the package is imported
    from safetensors import safe_open

    with safe_open(str(tmp_path / "small.safetensors"), framework="pt") as f:
        assert f.metadata() == {PYTHON_KEY: "small.py"} and set(f.keys()) == set(r.module.state_dict())
    loaded = _exec(tmp_path / "small.py")["load"]()
    x = torch.randn(4, 5)
    with torch.no_grad():
        assert torch.equal(loaded(x), r.module(x))
        assert (loaded(x) - model(x)).abs().max() <= 1e-6 * model(x).abs().max()
    # an explicit weights file (renamed away from the source)
    os.replace(tmp_path / "small.safetensors", tmp_path / "elsewhere.safetensors")
    with torch.no_grad():
        assert torch.equal(_exec(tmp_path / "small.py")["load"](str(tmp_path / "elsewhere.safetensors"))(x), r.module(x))


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_py_stores_tied_tensors_once_and_loads_them_into_both(tmp_path):
    r = sr_ir.minimize(Pair().eval(), (torch.randn(2, 4),), verify=False)
    tied = copy.deepcopy(r.module)
    tied.b.weight = tied.a.weight  # two parameters, one tensor: safetensors would refuse to store both
    save_python(tied, tmp_path / "tied.py")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "tied.safetensors"), framework="pt") as f:
        stored, meta = set(f.keys()), f.metadata()
    assert "b.weight" not in stored and json.loads(meta["sr_ir.aliases"]) == {"b.weight": "a.weight"}
    loaded = _exec(tmp_path / "tied.py")["load"]()
    assert torch.equal(loaded.b.weight, tied.a.weight) and torch.equal(loaded.a.weight, tied.a.weight)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), tied(x))


def _exec(path: Path) -> dict:
    """The namespace of ``path`` run as a module of its own (as `import` would, without sys.path)."""
    ns: dict = {"__file__": str(path), "__name__": path.stem}
    exec(compile(path.read_text(), str(path), "exec"), ns)
    return ns


def test_sr_and_py_of_one_stem_do_not_overwrite_each_others_weights(result, tmp_path):
    _, r = result
    r.save(tmp_path / "m.sr")
    before = (tmp_path / "m.safetensors").read_bytes()
    with pytest.raises(SrIrError, match=r"m\.safetensors holds the weights of .*m\.sr"):
        r.save(tmp_path / "m.py")
    assert (tmp_path / "m.safetensors").read_bytes() == before and not (tmp_path / "m.py").exists()
    r.save(tmp_path / "n.py")
    with pytest.raises(SrIrError, match=r"n\.safetensors holds the weights of .*n\.py"):
        r.save(tmp_path / "n.sr")
    assert not (tmp_path / "n.sr").exists()
    # the same format again replaces its own pair, and a leftover .safetensors alone is anyone's
    r.save(tmp_path / "m.sr")
    (tmp_path / "m.sr").unlink()
    r.save(tmp_path / "m.py")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert PAIR_KEY not in f.metadata() and f.metadata()[PYTHON_KEY] == "m.py"


def test_sr_and_pt2_round_trip(result, tmp_path):
    model, r = result
    r.save(tmp_path / "m.sr")
    back = sr_ir.load(tmp_path / "m.sr")
    assert back.to_text() == r.program.to_text()
    r.save(tmp_path / "m.pt2")
    ep = torch.export.load(str(tmp_path / "m.pt2")).module()
    for b in (2, 9):  # the batch stayed dynamic
        x = torch.randn(b, 5)
        with torch.no_grad():
            assert (ep(x) - model(x)).abs().max() <= 1e-6 * model(x).abs().max()


def test_onnx_is_checked_in_onnxruntime(result, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'sr-ir[onnx]')")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'sr-ir[onnx]')")
    import onnxruntime as ort

    model, r = result
    assert r.save(tmp_path / "m.onnx") == [tmp_path / "m.onnx"]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(11, 5)
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with torch.no_grad():
        assert (got - model(x)).abs().max() <= 1e-6 * model(x).abs().max()
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]  # no temporary or external-data file left


def test_onnx_without_the_extra_is_one_line(result, tmp_path, monkeypatch):
    _, r = result
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(SrIrError, match=r"writing \.onnx needs onnx, onnxscript and onnxruntime \(pip install 'sr-ir\[onnx\]'\)"):
        r.save(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_lower_takes_a_rule_directory_like_minimize():
    model = nn.Sequential(nn.Linear(4, 3), nn.Mish()).eval()
    x = torch.randn(2, 4)
    with pytest.raises(sr_ir.UnsupportedOpError, match="aten.mish"):
        sr_ir.lower(model, (x,))
    prog = sr_ir.lower(model, (x,), rules=ROOT / "examples" / "rules_ext")
    assert [n.op for n in prog.nodes] == ["linear", "mish"]
    assert sr_ir.lower(model, (x,), rules=[str(ROOT / "examples" / "rules_ext")]).to_text() == prog.to_text()


def test_dir_lists_the_public_api_without_importing_it():
    code = ("import sys, sr_ir; names = dir(sr_ir);"
            "assert {'minimize', 'lower', 'emit', 'load', 'Minimized', 'MinimizeReport', 'Program'} <= set(names), names;"
            "assert set(sr_ir.__all__) <= set(names);"
            "assert 'torch' not in sys.modules, 'dir() imported torch'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    for name in sr_ir.__all__:
        assert getattr(sr_ir, name) is not None


def test_py_typed_is_shipped(tmp_path):
    assert (ROOT / "sr_ir" / "py.typed").is_file()
    pytest.importorskip("hatchling")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = tmp_path.glob("sr_ir-*.whl")
    names = set(zipfile.ZipFile(whl).namelist())
    assert "sr_ir/py.typed" in names and "sr_ir/backend/export.py" in names


def test_an_onnx_file_that_disagrees_with_the_module_is_not_written(result, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'sr-ir[onnx]')")
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'sr-ir[onnx]')")
    import onnxruntime as ort

    _, r = result
    run = ort.InferenceSession.run

    def off_by_a_little(self, names, feeds, *args, **kwargs):  # an exporter bug, as the check would see it
        return [y * (1 + 1e-3) for y in run(self, names, feeds, *args, **kwargs)]

    monkeypatch.setattr(ort.InferenceSession, "run", off_by_a_little)
    with pytest.raises(sr_ir.VerificationError, match=r"m\.onnx: onnxruntime output 0 differs from the module by .* not written"):
        r.save(tmp_path / "m.onnx")
    assert not os.listdir(tmp_path)


def test_sr_holds_the_module_weights_as_they_are_now(result, tmp_path):
    _, r = result
    tuned = copy.deepcopy(r)
    with torch.no_grad():  # fine-tuned after minimize: every format saves these weights, .sr too
        tuned.module.fc3.bias.add_(1.0)
    tuned.save(tmp_path / "m.sr")
    back = sr_ir.load(tmp_path / "m.sr")
    assert torch.equal(back.weights["fc3.bias"], r.program.weights["fc3.bias"] + 1.0)
    tuned.module.double()
    with pytest.raises(SrIrError, match=r"converted since it was emitted cannot be saved as \.sr"):
        tuned.save(tmp_path / "d.sr")
    assert not (tmp_path / "d.sr").exists()
