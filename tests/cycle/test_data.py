import numpy as np
import pytest
import torch

from sr_ir.cycle.data import ImageView, digits, load_dataset, mnist_subset, stratified_split
from sr_ir.errors import SrIrError


def test_mnist_subset_fixed_stratified_split():
    s = mnist_subset()
    assert s.sizes() == (3500, 500, 1000) and s.num_features == 784 and s.num_classes == 10
    for ds, per_class in ((s.train, 350), (s.val, 50), (s.test, 100)):
        y = ds.tensors[1]
        assert torch.equal(torch.bincount(y), torch.full((10,), per_class))
    x = s.train.tensors[0]
    assert x.dtype == torch.float32 and float(x.min()) == 0.0 and float(x.max()) == 1.0
    again = mnist_subset()
    assert torch.equal(again.test.tensors[0], s.test.tensors[0])


def test_split_indices_are_disjoint_and_cover_everything():
    y = np.repeat(np.arange(3), 20)
    tr, va, te = stratified_split(y, (0.7, 0.1, 0.2), seed=5)
    allidx = np.concatenate([tr, va, te])
    assert len(allidx) == 60 and len(np.unique(allidx)) == 60
    other = stratified_split(y, (0.7, 0.1, 0.2), seed=6)
    assert not np.array_equal(other[2], te)


def test_digits_and_image_view():
    s = digits()
    assert sum(s.sizes()) == 1797 and s.num_features == 64
    img = ImageView(s.val, (1, 8, 8))
    x, y = img[0]
    assert x.shape == (1, 8, 8) and len(img) == len(s.val)


def test_unknown_dataset_and_bad_fractions():
    with pytest.raises(SrIrError, match="unknown dataset"):
        load_dataset("cifar")
    with pytest.raises(SrIrError):
        stratified_split(np.zeros(4, dtype=int), (0.5, 0.5, 0.5), 0)
