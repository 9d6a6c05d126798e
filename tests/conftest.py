"""Shared test settings: deterministic seeds and single-threaded torch (the suite runs on 2 cores with xdist)."""
import os
import sys
from pathlib import Path

import tempfile

import pytest
import torch

from sr_ir.testing.torchvision_schemas import make_torchvision_importable

torch.set_num_threads(1)

# the rule cache of the suite's own (shared by its workers and runs), never the user's: tests load rules
# from temporary folders, each of which would otherwise leave a cache file in ~/.cache/sr-ir
os.environ["SR_IR_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"sr-ir-test-cache-{os.getuid()}")
os.environ.pop("SR_IR_NO_CACHE", None)


make_torchvision_importable()
sys.path.insert(0, str(Path(__file__).resolve().parent / "frontend"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
