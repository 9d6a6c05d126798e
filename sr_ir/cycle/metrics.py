"""Size and cost of a deployable module: parameters, bytes of its saved weights, FLOPs per example."""
from __future__ import annotations

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def deployable_params(module: nn.Module) -> int:
    """Elements the deployed module holds: parameters plus buffers (e.g. an input-gather index)."""
    return sum(t.numel() for t in module.parameters()) + sum(b.numel() for b in module.buffers())


def deployable_bytes(module: nn.Module) -> int:
    """Size of the module's state dict written as safetensors (the artefact a deployment ships)."""
    # clone: tied or view-sharing tensors cannot be written by safetensors as they are
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    return len(safetensors_bytes(state))


@torch.no_grad()
def flops_per_example(module: nn.Module, example_inputs: tuple) -> int:
    """FLOPs of one forward pass on a single example (multiply-add = 2), as torch's counter sees them."""
    one = tuple(x[:1] if isinstance(x, torch.Tensor) else x for x in example_inputs)
    was_training = module.training
    module.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        module(*one)
    module.train(was_training)
    return int(counter.get_total_flops())


def size_summary(module: nn.Module, example_inputs: tuple) -> dict[str, int]:
    return {
        "params": deployable_params(module),
        "bytes": deployable_bytes(module),
        "flops": flops_per_example(module, example_inputs),
    }
