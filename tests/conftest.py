"""Shared test settings: deterministic seeds and single-threaded torch (the suite runs on 2 cores with xdist)."""
import glob
import importlib.util
import os
import sys
from pathlib import Path

import tempfile

import pytest
import torch

torch.set_num_threads(1)

# the rule cache of the suite's own (shared by its workers and runs), never the user's: tests load rules
# from temporary folders, each of which would otherwise leave a cache file in ~/.cache/sr-ir
os.environ["SR_IR_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"sr-ir-test-cache-{os.getuid()}")
os.environ.pop("SR_IR_NO_CACHE", None)


def _torchvision_importable() -> None:
    """Let `import torchvision` (and timm and transformers, which import it) work with the CPU torch.

    torchvision's registry wheel is built against CUDA; with the CPU torch its compiled extension does not
    load, and importing it then fails registering fakes for two detection ops whose schemas would come from
    that extension. The model definitions need neither op, so the schemas are defined here (only when the
    extension really does not load)."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    for lib in glob.glob(os.path.join(spec.submodule_search_locations[0], "_C*.so")):
        try:
            torch.ops.load_library(lib)
            return
        except OSError:
            pass
    schemas = torch.library.Library("torchvision", "DEF")
    schemas.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    schemas.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _torchvision_importable.keep = schemas  # the definitions live as long as the library object


_torchvision_importable()
sys.path.insert(0, str(Path(__file__).resolve().parent / "frontend"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
