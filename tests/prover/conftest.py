from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture
def rule_dir(tmp_path):
    """A fresh user rule directory; write files into it with `rule_dir(name, text)`."""
    d = tmp_path / "user_rules"
    d.mkdir()

    def write(name: str, text: str) -> Path:
        (d / name).write_text(text)
        return d

    write.path = d
    return write
