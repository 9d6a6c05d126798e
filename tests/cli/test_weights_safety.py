"""`--weights` reads safetensors only: a pickle (bare, or a torch.save archive) named `.safetensors` is
refused in one line and never unpickled."""
from __future__ import annotations

import pickle

import pytest

from sr_ir.cli.main import main

from ..payloads import Payload, saved

LENET = "sr_ir.models.lenet:lenet300_100"


@pytest.mark.parametrize("disguise", ["bare pickle", "torch.save archive"])
@pytest.mark.parametrize("command", ["show", "lower"])
def test_a_pickle_named_safetensors_is_refused_in_one_line(tmp_path, capfd, disguise, command):
    marker = tmp_path / "MARKER"
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(pickle.dumps(Payload(marker)) if disguise == "bare pickle" else saved(Payload(marker)))
    args = [command, LENET, "--weights", str(weights)] + (["-o", str(tmp_path / "m.sr")] if command == "lower" else [])
    assert main(args) != 0
    err = capfd.readouterr().err
    assert not marker.exists()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sr-ir {command}: error: {weights}: not a readable safetensors file")
    assert not (tmp_path / "m.sr").exists()
