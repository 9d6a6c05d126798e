"""Every file `save` writes gets the mode `open(path, "w")` would give it: 0644 under the usual umask 022,
0600 under 077 (the atomic writers create their temporaries through the umask, not with mkstemp's 0600)."""
from __future__ import annotations

import importlib.util
import os

import pytest
import torch
from torch import nn

import sr_ir

ONNX = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnxscript") is not None


@pytest.fixture(scope="module")
def result():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    return sr_ir.minimize(model, (torch.randn(2, 4),), verify=False)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)], ids=["umask022", "umask077"])
def test_written_files_follow_the_umask(result, tmp_path, umask, mode):
    names = ["m.sr", "m_py.py", "m.pt2"] + (["m.onnx"] if ONNX else [])
    old = os.umask(umask)
    try:
        written = [p for name in names for p in result.save(tmp_path / name)]
    finally:
        os.umask(old)
    assert sorted(p.name for p in written) == sorted(os.listdir(tmp_path))  # and nothing else was left
    assert {p.suffix for p in written} >= {".sr", ".safetensors", ".py", ".pt2"}
    for p in written:
        assert p.stat().st_mode & 0o777 == mode, f"{p.name}: {oct(p.stat().st_mode & 0o777)}"
    if not ONNX:
        pytest.skip("onnxruntime/onnxscript not installed: .onnx not checked (the other formats were)")
