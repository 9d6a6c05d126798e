"""A squeeze-release checkpoint never runs code: one carrying a `__reduce__` payload is refused with a
one-line SrIrError naming the global, by `load_cycle` and by `sr-ir squeeze-release --resume`."""
from __future__ import annotations

import pytest
import torch

import sr_ir.cycle.cycle as cycle_mod
from sr_ir.cli.main import main
from sr_ir.cycle.checkpoint import FORMAT, cycle_path, load_cycle
from sr_ir.errors import SrIrError

from ..payloads import GLOBALS, Payload
from .mlp_minimizer import mlp_minimize
from .test_cli import ARGS


def plant(folder, how: str):
    """cycle_000.pt as save_cycle writes it, with a payload among the weights; and the payload's marker."""
    marker = folder / "MARKER"
    path = cycle_path(folder, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "cycle": 0, "record": "{}", "config": "{}", "meta": "{}",
               "state": {"fc.weight": torch.zeros(2, 2), "fc.bias": Payload(marker, how)}}
    torch.save(payload, path, pickle_protocol=4 if how == "touch" else 2)
    return path, marker


@pytest.mark.parametrize("how", list(GLOBALS))
def test_load_cycle_refuses_a_reduce_payload_in_one_line(tmp_path, how):
    path, marker = plant(tmp_path, how)
    with pytest.raises(SrIrError) as e:
        load_cycle(path)
    message = str(e.value)
    assert not marker.exists()
    assert message.startswith(f"{path}: ") and f"unpickles {GLOBALS[how]}" in message
    assert len(message.splitlines()) == 1
    torch.load(path, weights_only=False)  # the file is a real attack: a trusting load runs it
    assert marker.exists()


def test_resume_from_a_planted_checkpoint_is_one_line(tmp_path, capfd, monkeypatch):
    monkeypatch.setattr(cycle_mod, "default_minimizer", mlp_minimize)
    out = tmp_path / "run"
    path, marker = plant(out, "exec")  # the CLI keeps its checkpoints in OUT itself
    assert main(ARGS + ["--out", str(out), "--resume"]) != 0
    err = capfd.readouterr().err
    assert not marker.exists()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("sr-ir squeeze-release: error: ") and f"unpickles {GLOBALS['exec']}" in err
