"""The wheel carries grammar/, rules/, proofs/ and prelude/, and an installed copy finds them."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (whl,) = out.glob("sr_ir-*.whl")
    return whl


def test_wheel_contains_data_folders(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in ("grammar/ir.lark", "grammar/rules.lark", "rules/ops/core.rules", "prelude/pytorch.py"):
        assert f"sr_ir/_data/{rel}" in names, rel
    assert any(n.startswith("sr_ir/_data/proofs/") for n in names)
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_finds_its_data(wheel, tmp_path):
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import sr_ir, sr_ir.resources as r;"
        "assert str(r.data_dir('rules')).startswith(%r), r.data_dir('rules');"
        "from sr_ir.lang.loader import default_rules; assert 'linear' in default_rules().ops;"
        "print('ok')" % str(target)
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                       env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
