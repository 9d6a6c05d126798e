"""Let `import torchvision` (and timm and transformers, which import it) work with the CPU torch.

torchvision's registry wheel is built against CUDA; with the CPU torch its compiled extension does not
load, and importing it then fails registering fakes for two detection ops whose schemas would come from
that extension. The model definitions need neither op, so the schemas are defined here, only when the
extension really does not load. Used by the test suite and the benchmarks that build torchvision,
timm or transformers models."""
from __future__ import annotations

import glob
import importlib.util
import os

import torch

_KEEP: list[torch.library.Library] = []  # the definitions live as long as the library object


def make_torchvision_importable() -> None:
    """Load torchvision's extension, or define the two op schemas its import needs (once per process)."""
    if _KEEP:
        return
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
    _KEEP.append(schemas)
