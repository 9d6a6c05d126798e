"""From PyTorch to the IR: torch.export, then a walk over the ATen graph guided by rules/ op declarations."""
from .lower import lower

__all__ = ["lower"]
