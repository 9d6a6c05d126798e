"""`sr-ir minimize -o`: a folder where an output file should go is refused before any work."""
from __future__ import annotations

import os

import pytest

from sr_ir.cli.main import main


@pytest.mark.parametrize("folder, out", [("x.sr", "x.sr"), ("x.safetensors", "x.sr"), ("x.pt2", "x.pt2")])
def test_a_folder_output_is_refused_before_the_model_is_read(tmp_path, capsys, folder, out):
    (tmp_path / folder).mkdir()
    # the model does not exist: reading it first would report that instead
    assert main(["minimize", "no_such_module:factory", "-o", str(tmp_path / out)]) == 1
    err = capsys.readouterr().err
    assert err == f"sr-ir minimize: error: {tmp_path / folder}: is a folder; give a file name to write\n"
    assert sorted(os.listdir(tmp_path)) == [folder] and os.listdir(tmp_path / folder) == []
