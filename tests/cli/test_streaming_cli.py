"""`sr-ir minimize pkg.mod:factory --weights big.safetensors -o small.safetensors`: the streaming path.
It writes the minimized weights and their program text, equal to the in-memory result; a missing
checkpoint or one that does not fit the factory's model is one line, and nothing is written."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

import sr_ir
from sr_ir.cli.main import main
from sr_ir.models.lenet import lenet300_100

LENET = "sr_ir.models.lenet:lenet300_100"


def planted(path) -> torch.nn.Module:
    m = lenet300_100()
    with torch.no_grad():
        m.fc1.weight[:120] = 0  # dead units: relu(0 + 0) = 0
        m.fc1.bias[:120] = 0
        m.fc2.weight[:, 200:230] = 0  # units nobody reads
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    return m


def test_streams_a_checkpoint_to_safetensors_and_its_program(tmp_path, capsys):
    big, small = tmp_path / "big.safetensors", tmp_path / "small.safetensors"
    m = planted(big)
    assert main(["minimize", LENET, "--weights", str(big), "-o", str(small), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["written"] == [str(small), str(tmp_path / "small.sr")]
    assert out["streamed_verification"]["max_rel"] < 1e-10
    want = sr_ir.minimize(m, (torch.randn(4, 784),)).program.weights
    got = load_file(str(small))
    assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert out["params_after"] == sum(t.numel() for k, t in got.items() if not k.endswith("_kept"))
    assert sr_ir.load(tmp_path / "small.sr").param_count() == out["params_after"]
    mode = os.stat(small).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # the user's umask, like every other output
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".sr-ir-tmp")]


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["minimize", LENET, "--weights", str(tmp_path / "nope.safetensors"),
                 "-o", str(tmp_path / "small.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err == f"sr-ir minimize: error: no such weights file: {tmp_path / 'nope.safetensors'}\n"
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_of_another_shape_is_one_line(tmp_path, capsys):
    m = lenet300_100()
    state = {k: v.contiguous() for k, v in m.state_dict().items()}
    state["fc2.weight"] = torch.zeros(100, 299)
    save_file(state, str(tmp_path / "big.safetensors"))
    assert main(["minimize", LENET, "--weights", str(tmp_path / "big.safetensors"),
                 "-o", str(tmp_path / "small.safetensors")]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"sr-ir minimize: error: {tmp_path / 'big.safetensors'} does not match the model: "
                          f"fc2.weight is [100, 299] float32 in the file, [100, 300] float32 in the model")
    assert sorted(os.listdir(tmp_path)) == ["big.safetensors"]


@pytest.mark.parametrize("args", [["-o", "small.safetensors"], ["--weights", "w.safetensors", "-o", "a.safetensors",
                                                                 "-o", "b.sr"]])
def test_streaming_needs_a_factory_weights_and_one_output(tmp_path, capsys, args):
    args = [str(tmp_path / a) if a.endswith((".safetensors", ".sr")) else a for a in args]
    assert main(["minimize", LENET, *args]) == 1
    assert "a .safetensors output streams a checkpoint" in capsys.readouterr().err
