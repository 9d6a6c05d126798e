"""FrozenBatchNorm: batch normalisation in its inference form, in training mode too.

sr-ir's `batch_norm` op (rules/ops/core.rules) is the inference form: it normalises with the running
statistics it is given. nn.BatchNorm2d computes that only in eval mode (in training it normalises with
the batch's statistics and updates the running ones), and its state dict carries `num_batches_tracked`,
which the op has no operand for. This layer is what an emitted module holds for a `batch_norm` node: the
op's computation in every mode (weight and bias stay trainable; the statistics are fixed, like
torchvision's FrozenBatchNorm2d), any rank with channels on axis 1, and a state dict of exactly
weight, bias, running_mean and running_var.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm


class FrozenBatchNorm(_BatchNorm):
    """`F.batch_norm(x, running_mean, running_var, weight, bias, training=False, eps=eps)` as a layer.

    >>> bn = FrozenBatchNorm(8, eps=1e-5)
    >>> sorted(bn.state_dict())
    ['bias', 'running_mean', 'running_var', 'weight']
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        # track_running_stats=False: no num_batches_tracked (and _NormBase adds none when loading);
        # the running statistics are then registered here as the fixed buffers they are
        super().__init__(num_features, eps, momentum=0.0, affine=affine, track_running_stats=False,
                         device=device, dtype=dtype)
        fk = {"device": device, "dtype": dtype}
        self.register_buffer("running_mean", torch.zeros(num_features, **fk))
        self.register_buffer("running_var", torch.ones(num_features, **fk))

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"FrozenBatchNorm: expected an input of rank 2 or more, got rank {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                            self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


__all__ = ["FrozenBatchNorm"]
