"""Shared test settings: deterministic seeds and single-threaded torch (the suite runs on 2 cores with xdist)."""
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parent / "frontend"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
