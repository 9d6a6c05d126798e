"""`.pt2` input never runs code: archives from torch.export.save with a payload planted in every place
torch.export.load would run one (pickled weights, constants, example inputs, opaque constants, legacy
members, shape expressions, names pasted into generated code, guards) are refused in one line before
torch reads them, by `load_exported` and by every CLI command; legitimate archives lower as before."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from sr_ir.cli.main import main
from sr_ir.errors import SrIrError
from sr_ir.frontend import load_exported, lower
from sr_ir.frontend.archive import _weights_only_torch_load
from sr_ir.frontend.lower import export_model

from ..payloads import GLOBALS, Payload, saved


class ConvNet(nn.Module):
    """Weights, a buffer and a lifted tensor constant: every kind of member an archive has."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1)) + torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


@pytest.fixture(scope="module")
def conv_archive(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("legit") / "net.pt2"
    torch.export.save(export_model(ConvNet().eval(), (torch.randn(2, 3, 8, 8),)), str(path))
    return path


@dataclass
class Archive:
    """The members of an archive (names below its root folder), to be edited and written again."""

    root: str
    members: dict[str, bytes]

    @classmethod
    def read(cls, path: Path) -> "Archive":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            return cls(names[0].split("/")[0], {n.split("/", 1)[1]: z.read(n) for n in names})

    def json(self, name: str) -> Any:
        return json.loads(self.members[name])

    def edit_json(self, name: str, edit: Callable[[Any], None]) -> None:
        doc = self.json(name)
        edit(doc)
        self.members[name] = json.dumps(doc).encode()

    def write(self, path: Path) -> Path:
        with zipfile.ZipFile(path, "w") as z:
            for name, data in self.members.items():
                z.writestr(f"{self.root}/{name}", data)
        return path


WEIGHTS = "data/weights/model_weights_config.json"
CONSTANTS = "data/constants/model_constants_config.json"
PROGRAM = "models/model.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"


def pickled_weight(a: Archive, marker: Path) -> None:
    def edit(doc):
        doc["config"]["conv.weight"]["use_pickle"] = True
        a.members["data/weights/" + doc["config"]["conv.weight"]["path_name"]] = saved(Payload(marker, "system"))
    a.edit_json(WEIGHTS, edit)


def pickled_constant(a: Archive, marker: Path) -> None:
    def edit(doc):
        (meta,) = doc["config"].values()
        meta["use_pickle"] = True
        a.members["data/constants/" + meta["path_name"]] = saved(Payload(marker, "exec"))
    a.edit_json(CONSTANTS, edit)


def object_constant(prefix: str) -> Callable[[Archive, Path], None]:
    def plant(a: Archive, marker: Path) -> None:
        def edit(doc):
            (fqn,) = doc["config"]
            doc["config"][fqn] = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True, "tensor_meta": None}
        a.edit_json(CONSTANTS, edit)
        a.members[f"data/constants/{prefix}0"] = pickle.dumps(Payload(marker, "exec"))
    return plant


def program_text(old: str, new: Callable[[Path], str]) -> Callable[[Archive, Path], None]:
    def plant(a: Archive, marker: Path) -> None:
        text = a.members[PROGRAM].decode()
        assert old in text
        a.members[PROGRAM] = text.replace(old, new(marker)).encode()
    return plant


def bad_target(a: Archive, marker: Path) -> None:
    def edit(doc):
        node = next(n for n in doc["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.relu.default")
        node["target"] = "torch.os.system"
        node["inputs"] = [{"name": "command", "arg": {"as_string": f"touch '{marker}'"}, "kind": 1}]
    a.edit_json(PROGRAM, edit)


def touch_code(marker: Path) -> str:
    return f"__import__('os').system('touch {marker}')"


SYMBOL = "Symbol('s77', positive=True, integer=True)"

# name -> (how the payload is planted, whether torch.export.load (and calling .module()) runs it, what the refusal names)
CASES: dict[str, tuple[Callable[[Archive, Path], None], bool, str]] = {
    "example inputs": (lambda a, m: a.members.update({SAMPLE_INPUTS: saved(Payload(m, "touch"), protocol=4)}),
                       True, f"sample_inputs/model.pt:archive/data.pkl: unpickles {GLOBALS['touch']}"),
    "example inputs as a bare pickle": (lambda a, m: a.members.update({SAMPLE_INPUTS: pickle.dumps(Payload(m))}),
                                        True, "sample_inputs/model.pt: not a torch.save zip payload"),
    "pickled weight": (pickled_weight, True, f"weight_0:archive/data.pkl: unpickles {GLOBALS['system']}"),
    "pickled constant": (pickled_constant, True, f"tensor_0:archive/data.pkl: unpickles {GLOBALS['exec']}"),
    "opaque constant": (object_constant("opaque_obj_"), True, "is a pickled Python object (opaque_obj_0)"),
    "script-object constant": (object_constant("custom_obj_"), False, "is a pickled Python object (custom_obj_0)"),
    "legacy weights": (lambda a, m: a.members.update({"data/weights/model.pt": saved(Payload(m))}),
                       True, f"data/weights/model.pt:archive/data.pkl: unpickles {GLOBALS['system']}"),
    "legacy constants": (lambda a, m: a.members.update({"data/constants/model.pt": saved(Payload(m, "exec"))}),
                         True, f"data/constants/model.pt:archive/data.pkl: unpickles {GLOBALS['exec']}"),
    "shape expression": (program_text(SYMBOL, lambda m: f"{touch_code(m)} or {SYMBOL}"), True, "shape expression"),
    # sympy sympifies (evals) string arguments too
    "string in a shape expression": (program_text(SYMBOL, lambda m: json.dumps(f'Max({SYMBOL}, "{touch_code(m)}")')[1:-1]),
                                     True, "has string"),
    "input name": (program_text('"x"', lambda m: json.dumps(f"x={touch_code(m)}")), True, "name \"x=__import__"),
    "guard": (program_text('"guards_code": []', lambda m: f'"guards_code": {json.dumps([touch_code(m) + " == 0"])}'),
              True, "guard"),
    "node target": (bad_target, False, "node target 'torch.os.system'"),
    "AOTInductor library": (lambda a, m: a.members.update({"data/aotinductor/model/model.so": b"\x7fELF"}),
                            False, "compiled AOTInductor code"),
    "a second program spelled in capitals": (lambda a, m: a.members.update({"MODELS/model.json": a.members[PROGRAM]}),
                                             False, "a second member named like"),
}
EXECUTED_BY_TORCH = [name for name, (_, runs, _) in CASES.items() if runs]


def plant(conv_archive: Path, tmp_path: Path, case: str) -> tuple[Path, Path]:
    """The archive with the case's payload, and the marker file the payload would create."""
    marker = tmp_path / "MARKER"
    archive = Archive.read(conv_archive)
    CASES[case][0](archive, marker)
    return archive.write(tmp_path / "evil.pt2"), marker


@pytest.mark.filterwarnings("ignore")  # torch warns about the protocol-4 payload it is about to run
@pytest.mark.parametrize("case", EXECUTED_BY_TORCH)
def test_plain_torch_export_load_runs_each_payload(conv_archive, tmp_path, case):
    """The planted archives are real attacks: torch's own loader runs them (so the refusals below matter)."""
    path, marker = plant(conv_archive, tmp_path, case)
    with contextlib.suppress(Exception):  # most payloads also break the archive for torch, after running
        torch.export.load(str(path)).module()(torch.randn(2, 3, 8, 8))  # the guards run on a call
    assert marker.exists()


@pytest.mark.parametrize("case", list(CASES))
def test_load_exported_refuses_each_payload_in_one_line(conv_archive, tmp_path, case):
    path, marker = plant(conv_archive, tmp_path, case)
    with pytest.raises(SrIrError) as e:
        load_exported(path)
    message = str(e.value)
    assert not marker.exists()
    assert CASES[case][2] in message, message
    assert message.startswith(f"{path}: member ") and len(message.splitlines()) == 1


COMMANDS = {
    "show": lambda p, out: ["show", str(p)],
    "lower": lambda p, out: ["lower", str(p), "-o", str(out / "m.sr")],
    "minimize": lambda p, out: ["minimize", str(p), "-o", str(out / "m.sr"), "--quiet"],
    "emit": lambda p, out: ["emit", str(p), "--pt2", str(out / "m.pt2")],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", ["example inputs", "pickled weight", "opaque constant", "input name", "guard"])
def test_cli_refuses_each_payload_in_one_line(conv_archive, tmp_path, capfd, command, case):
    path, marker = plant(conv_archive, tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    assert main(COMMANDS[command](path, out)) != 0
    err = capfd.readouterr().err
    assert not marker.exists()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sr-ir {command}: error: {path}: member ")
    assert list(out.iterdir()) == []


def truncated(conv_archive: Path, tmp_path: Path) -> Path:
    data = conv_archive.read_bytes()
    return _written(tmp_path / "truncated.pt2", data[: len(data) // 2])


def random_bytes(conv_archive: Path, tmp_path: Path) -> Path:
    return _written(tmp_path / "random.pt2", os.urandom(4096))


def missing_version(conv_archive: Path, tmp_path: Path) -> Path:
    # a zip our checks pass that torch fails on: torch logs a traceback, then raises a vaguer error
    archive = Archive.read(conv_archive)
    del archive.members["archive_version"]
    return archive.write(tmp_path / "no_version.pt2")


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, says", [(truncated, "BadZipFile"), (random_bytes, "BadZipFile"),
                                        (missing_version, "archive_version")])
def test_broken_archives_are_one_line_without_torch_traceback(conv_archive, tmp_path, capfd, caplog, make, says):
    path = make(conv_archive, tmp_path)
    torch_export = logging.getLogger("torch.export")
    logging_before = (torch_export.handlers[:], torch_export.level, torch_export.propagate)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(SrIrError) as e:
            load_exported(path)
        assert main(["show", str(path)]) != 0
    message = str(e.value)
    assert message.startswith(f"{path}: cannot read the torch.export archive (") and says in message
    assert len(message.splitlines()) == 1
    err = capfd.readouterr().err
    assert err.strip() == f"sr-ir show: error: {message}"
    assert not [r for r in caplog.records if r.name.startswith(("torch.export", "torch._export"))]
    # torch's own logging is back as it was
    assert (torch_export.handlers, torch_export.level, torch_export.propagate) == logging_before


@pytest.mark.parametrize("model, inputs, dynamic", [
    (mlp, (torch.randn(4, 8),), True),
    (mlp, (torch.randn(4, 8),), False),
    (ConvNet, (torch.randn(2, 3, 8, 8),), True),
    (ConvNet, (torch.randn(2, 3, 8, 8),), False),
])
def test_legitimate_archive_lowers_as_the_module_does(tmp_path, model, inputs, dynamic):
    module = model().eval()
    path = tmp_path / "net.pt2"
    torch.export.save(export_model(module, inputs, dynamic_batch=dynamic), str(path))
    ep = load_exported(path)
    assert [tuple(x.shape) for x in ep.example_inputs[0]] == [tuple(x.shape) for x in inputs]
    direct = lower(module, inputs, dynamic_batch=dynamic, name="net")
    loaded = lower(ep, name="net")
    assert loaded.to_text() == direct.to_text()
    assert loaded.weights.keys() == direct.weights.keys()
    assert all(torch.equal(loaded.weights[k], direct.weights[k]) for k in direct.weights)


def legacy_archive(path: Path, module: nn.Module, inputs: tuple, example_inputs: bytes | None = None) -> Path:
    """The layout torch.export.save wrote before torch 2.8, which torch.export.load still reads."""
    from torch._export.serde.schema import SCHEMA_VERSION
    from torch._export.serde.serialize import serialize

    art = serialize(export_model(module, inputs))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        z.writestr("serialized_exported_program.json", art.exported_program)
        z.writestr("serialized_state_dict.pt", art.state_dict)
        z.writestr("serialized_constants.pt", art.constants)
        z.writestr("serialized_example_inputs.pt", example_inputs or art.example_inputs)
    return path


def test_an_archive_in_the_old_layout_loads_and_its_payloads_are_refused(tmp_path):
    module, inputs = mlp().eval(), (torch.randn(4, 8),)
    ep = load_exported(legacy_archive(tmp_path / "old.pt2", module, inputs))
    assert lower(ep, name="net").to_text() == lower(module, inputs, name="net").to_text()
    marker = tmp_path / "MARKER"
    evil = legacy_archive(tmp_path / "evil.pt2", module, inputs, example_inputs=saved(Payload(marker, "exec")))
    with pytest.raises(SrIrError, match=f"member serialized_example_inputs.pt:.*unpickles {GLOBALS['exec']}"):
        load_exported(evil)
    assert not marker.exists()


def test_every_torch_load_inside_is_weights_only(tmp_path):
    """The second line of defence: a pickle the scan let through would still meet weights_only=True."""
    marker = tmp_path / "MARKER"
    before = dict(os.environ)
    with _weights_only_torch_load():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(io.BytesIO(saved(Payload(marker))), weights_only=False)
    assert not marker.exists()
    assert dict(os.environ) == before
