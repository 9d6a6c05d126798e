"""Code that computes from the batch size alone (mask and position-id code) lowers at a dynamic batch."""
import torch
from torch import nn

import sr_ir


class MaskFromBatch(nn.Module):
    """Hugging Face style: position ids expanded over the batch, a mask built by indexing them with
    arange(batch), dead code over the batch, and a `use_cache` flag that must be turned off."""

    def __init__(self):
        super().__init__()
        self.register_buffer("pos", torch.arange(6).unsqueeze(0))
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)

    def forward(self, ids, use_cache=True):
        b = ids.shape[0]
        pos = self.pos.expand(b, -1)
        rows = torch.arange(b)[:, None, None]
        _ = torch.arange(b) * 2  # read by nothing
        keep = pos[rows, pos[:, :, None]] >= pos[rows, pos[:, None, :]]  # causal, per batch row
        h = self.fc(self.emb(ids))
        out = torch.nn.functional.scaled_dot_product_attention(h[:, None], h[:, None], h[:, None], keep[:, None])
        return (out[:, 0], [h]) if use_cache else out[:, 0]


class RowsDiffer(nn.Module):
    def forward(self, x):
        return x + torch.arange(x.shape[0], dtype=x.dtype)[:, None]


def test_mask_code_over_the_batch_lowers_once_for_every_batch_size():
    model = MaskFromBatch().double().eval()
    ids = torch.randint(0, 10, (2, 6))
    p = sr_ir.lower(model, [ids])
    assert str(p.inputs[0][1].shape[0]) == "N"
    m = sr_ir.emit(p)
    for b in (1, 3, 7):
        x = torch.randint(0, 10, (b, 6))
        torch.testing.assert_close(m(x), model(x, use_cache=False), rtol=1e-12, atol=1e-12)
    # the mask became one broadcast row, not a tensor per batch size
    masks = [t for name, t in p.params.items() if t.dtype == "bool"]
    assert masks and all(t.shape[0] == 1 for t in masks)


def test_a_value_whose_rows_differ_with_the_batch_is_not_folded_into_one_row():
    # x + arange(batch): each row gets its own constant; the lowering must not pretend otherwise
    model, x = RowsDiffer().double(), torch.randn(2, 3, dtype=torch.float64)
    p = sr_ir.lower(model, [x])
    # it falls back to the example's static batch, which is exact there
    assert p.inputs[0][1].shape[0] == 2
    torch.testing.assert_close(sr_ir.emit(p)(x), model(x), rtol=0, atol=0)
