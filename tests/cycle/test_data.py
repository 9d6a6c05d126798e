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


# --- Fashion-MNIST from idx files ----------------------------------------------------------------------

import gzip  # noqa: E402

from sr_ir.cycle.data import (  # noqa: E402
    FASHION_MNIST_DIR,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    fashion_mnist,
    holdout_split,
    load_npz,
    read_idx,
)


def write_idx(path, arr: np.ndarray, code: int = 0x08) -> None:
    """An idx file as the format defines it: 00 00 <type> <ndim>, big-endian uint32 sizes, the values."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    with (gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb")) as f:
        f.write(data)


def tiny_fashion(folder, per_class=12, test_per_class=2, size=28, seed=1):
    """A synthetic Fashion-MNIST folder: 10 classes, ``per_class`` training and ``test_per_class`` test images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y_tr = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
    y_te = np.repeat(np.arange(10, dtype=np.uint8), test_per_class)
    x_tr = rng.integers(0, 256, (len(y_tr), size, size), dtype=np.uint8)
    x_te = rng.integers(0, 256, (len(y_te), size, size), dtype=np.uint8)
    for name, arr in zip(FASHION_MNIST_FILES, (x_tr, y_tr, x_te, y_te)):
        write_idx(folder / name, arr)
    return x_tr, y_tr, x_te, y_te


def test_read_idx_parses_what_the_format_says(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a) and read_idx(tmp_path / "a.gz").shape == (2, 3, 4)
    b = np.array([[1.5, -2.25], [3.0, 1e-3]], dtype=np.float64)  # multi-byte types are big-endian
    write_idx(tmp_path / "b", b, code=0x0E)
    assert np.array_equal(read_idx(tmp_path / "b"), b)


def test_read_idx_refuses_bad_files_in_one_line(tmp_path):
    (tmp_path / "magic.gz").write_bytes(gzip.compress(b"\x00\x01\x08\x01" + b"\x00" * 8))
    (tmp_path / "short.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 9))
    (tmp_path / "nogzip.gz").write_bytes(b"plain bytes, not gzip")
    for name, msg in (("magic.gz", "bad magic number"), ("short.gz", "the header promises shape (10,)"),
                      ("nogzip.gz", "not a readable idx file"), ("absent.gz", "no such file")):
        with pytest.raises(SrIrError) as e:
            read_idx(tmp_path / name)
        assert msg in str(e.value) and name in str(e.value) and len(str(e.value).splitlines()) == 1


def test_fashion_mnist_from_synthetic_idx_files(tmp_path, monkeypatch):
    x_tr, y_tr, x_te, y_te = tiny_fashion(tmp_path / "fm")
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path / "fm"))  # as load_dataset and the CLI find it
    s = load_dataset("fashion-mnist")
    assert s.name == "fashion-mnist" and s.num_features == 784 and s.num_classes == 10
    assert s.sizes() == (110, 10, 20)  # one twelfth of each class's 12 held out for validation
    assert torch.equal(torch.bincount(s.val.tensors[1]), torch.ones(10, dtype=torch.long))
    # the held-out indices, exactly: values in [0, 1] as x / 255 in float32, rows in file order
    kept, held = holdout_split(y_tr, 1 / 12, seed=0)
    flat = x_tr.reshape(len(x_tr), -1)
    assert torch.equal(s.train.tensors[0], torch.from_numpy(flat[kept].astype(np.float32) / np.float32(255)))
    assert torch.equal(s.val.tensors[1], torch.from_numpy(y_tr[held].astype(np.int64)))
    assert torch.equal(s.test.tensors[0], torch.from_numpy(x_te.reshape(20, -1).astype(np.float32) / np.float32(255)))
    assert torch.equal(s.test.tensors[1], torch.from_numpy(y_te.astype(np.int64)))
    assert float(s.test.tensors[0].max()) <= 1.0 and s.test.tensors[0].dtype == torch.float32
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(len(y_tr)))
    # fixed: the same seed gives the same split, another seed another one; the folder argument wins
    assert torch.equal(fashion_mnist(folder=tmp_path / "fm").val.tensors[0], s.val.tensors[0])
    assert not torch.equal(fashion_mnist(seed=1, folder=tmp_path / "fm").val.tensors[0], s.val.tensors[0])


def test_fashion_mnist_missing_names_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))  # an empty folder
    with pytest.raises(SrIrError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "apt-get install -y dataset-fashion-mnist" in msg
    assert f"{tmp_path} has no train-images-idx3-ubyte.gz" in msg


def test_fashion_mnist_mismatched_files_are_one_line(tmp_path):
    tiny_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))  # 20 images, 3 labels
    with pytest.raises(SrIrError, match=r"t10k-\*-ubyte.gz: images \(20, 28, 28\) and labels \(3,\) do not match"):
        fashion_mnist(folder=tmp_path)


@pytest.mark.skipif(not all((FASHION_MNIST_DIR / n).is_file() for n in FASHION_MNIST_FILES),
                    reason=f"Fashion-MNIST is not installed ({FASHION_MNIST_DIR}; apt-get install -y dataset-fashion-mnist)")
def test_fashion_mnist_real_files_fixed_split(monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    s = fashion_mnist()
    assert s.sizes() == (55_000, 5_000, 10_000) and s.num_features == 784
    assert torch.equal(torch.bincount(s.val.tensors[1]), torch.full((10,), 500))
    assert torch.equal(torch.bincount(s.train.tensors[1]), torch.full((10,), 5_500))
    assert torch.equal(torch.bincount(s.test.tensors[1]), torch.full((10,), 1_000))
    x = s.train.tensors[0]
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # the published files: the first training and test images are both an ankle boot (class 9)
    raw = read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert raw[0] == 9 and int(s.test.tensors[1][0]) == 9


# --- a user's .npz ---------------------------------------------------------------------------------------

def _arrays(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), np.repeat(np.arange(3), n // 3)


def test_npz_with_every_split_is_taken_as_given(tmp_path):
    x, y = _arrays()
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_val=x[:6] + 1, y_val=y[:6], x_test=x[:9] * 2, y_test=y[:9])
    s = load_npz(tmp_path / "d.npz")
    assert s.sizes() == (60, 6, 9) and s.notes == () and s.num_features == 5 and s.num_classes == 3
    assert torch.equal(s.val.tensors[0], torch.from_numpy(x[:6] + 1)) and s.val.tensors[1].dtype == torch.long
    assert torch.equal(s.test.tensors[0], torch.from_numpy(x[:9] * 2))


def test_npz_without_val_and_test_holds_them_out_and_says_so(tmp_path):
    x, y = _arrays()
    images = x.reshape(60, 5, 1)  # rows of any shape: kept as they are
    np.savez(tmp_path / "d.npz", x_train=images.astype(np.float64), y_train=y.astype(np.uint8))
    s = load_npz(tmp_path / "d.npz")
    assert s.sizes() == (48, 6, 6)  # 10% of each class of 20 for test, then 10% of the 18 left for validation
    assert s.notes[0].startswith("d.npz has no x_test/y_test: held out 6 examples") and "seed 0" in s.notes[0]
    assert "no x_val/y_val" in s.notes[1] and len(s.notes) == 2
    assert torch.equal(torch.bincount(s.test.tensors[1]), torch.full((3,), 2))
    assert s.train.tensors[0].shape == (48, 5, 1) and s.train.tensors[0].dtype == torch.float32
    rows = {tuple(r.flatten().tolist()) for ds in (s.train, s.val, s.test) for r in ds.tensors[0]}
    assert len(rows) == 60  # a partition of the training rows
    again = load_npz(tmp_path / "d.npz")
    assert all(torch.equal(a.tensors[0], b.tensors[0]) for a, b in ((s.train, again.train), (s.test, again.test)))


@pytest.mark.parametrize("arrays, message", [
    (dict(x_train=np.zeros((4, 2))), "no y_train (it holds x_train)"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(4, int), x_valid=np.zeros((1, 2))), "unexpected array(s) x_valid"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(4, int), x_val=np.zeros((1, 2))), "x_val without y_val"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(4)), "y_train must be integer class labels of shape [N], got float64 [4]"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(3, int)), "x_train has 4 rows, y_train 3"),
    (dict(x_train=np.zeros(4), y_train=np.zeros(4, int)), "x_train must be numbers of shape [N, features...]"),
    (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(4, int), x_test=np.zeros((2, 3)), y_test=np.zeros(2, int)),
     "x_test rows are [3], x_train rows [2]"),
    (dict(x_train=np.full((4, 2), np.nan), y_train=np.zeros(4, int)), "x_train holds NaN"),
    (dict(x_train=np.zeros((4, 2)), y_train=-np.ones(4, int)), "negative labels"),
    (dict(x_train=np.zeros((2, 2)), y_train=np.zeros(2, int)), "too few training examples to hold out a test set"),
])
def test_npz_errors_are_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(SrIrError) as e:
        load_npz(tmp_path / "d.npz")
    assert message in str(e.value) and str(e.value).startswith(str(tmp_path / "d.npz")), str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_npz_never_unpickles_and_refuses_non_archives(tmp_path):
    from ..payloads import Payload

    marker = tmp_path / "MARKER"
    planted = np.empty(1, dtype=object)
    planted[0] = Payload(marker, "touch")  # np.savez pickles object arrays: a load that unpickles runs it
    np.savez(tmp_path / "obj.npz", x_train=planted, y_train=np.zeros(1, int))
    with pytest.raises(SrIrError, match="x_train cannot be read without pickle"):
        load_npz(tmp_path / "obj.npz")
    assert not marker.exists()
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    with pytest.raises(SrIrError, match="a single array, not an .npz archive"):
        load_npz(tmp_path / "one.npy")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(SrIrError, match="not a readable .npz file"):
        load_npz(tmp_path / "junk.npz")
    with pytest.raises(SrIrError, match="no such data file"):
        load_npz(tmp_path / "absent.npz")
