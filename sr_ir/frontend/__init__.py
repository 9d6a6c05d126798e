"""From PyTorch to the IR: torch.export, then a walk over the ATen graph guided by rules/ op declarations."""
from .archive import check_torch_save, load_exported
from .lower import lower

__all__ = ["check_torch_save", "load_exported", "lower"]
