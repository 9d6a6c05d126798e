"""From the IR back to runnable code (PyTorch modules; .pt2 and ONNX through them)."""
from .torch_module import emit, emit_source, rebuild_generated

__all__ = ["emit", "emit_source", "rebuild_generated"]
