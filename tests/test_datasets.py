"""The idx reader and the Fashion-MNIST loader (refnet/datasets.py), on tiny files the tests
write themselves; the real data set is never needed."""
import gzip
import struct

import numpy as np
import pytest

from refnet import datasets


def _idx(a: np.ndarray, code: int) -> bytes:
    be = a.astype(a.dtype.newbyteorder(">"))
    return bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + be.tobytes()


@pytest.mark.parametrize("dtype,code", [("u1", 0x08), ("i1", 0x09), ("i2", 0x0B),
                                         ("i4", 0x0C), ("f4", 0x0D), ("f8", 0x0E)])
def test_parse_idx_round_trips_every_type(dtype, code):
    """Values, shape and a native-order dtype come back for each of the format's six types
    (big-endian on disk: a reader that forgot the byte order would return other values)."""
    a = (np.arange(24).reshape(2, 3, 4) * 7 - 60).astype(dtype)
    if dtype == "u1":
        a = np.arange(24, dtype="u1").reshape(2, 3, 4) * 9
    b = datasets.parse_idx(_idx(a, code))
    assert b.shape == a.shape and b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize("raw,match", [
    (b"", "not an idx file"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an idx file"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown idx type code 0x07"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05\x06", "file has 10"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "file has 10"),
    (b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "limit 2\\*\\*31"),
])
def test_parse_idx_refuses_malformed_bytes(raw, match):
    with pytest.raises(ValueError, match=match):
        datasets.parse_idx(raw, name="f.idx")


def test_parse_idx_refuses_non_bytes():
    with pytest.raises(TypeError, match="expected bytes"):
        datasets.parse_idx("0000")


def test_read_idx_reads_gzip_and_names_the_file(tmp_path):
    a = np.arange(12, dtype="u1").reshape(3, 4)
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx(a, 0x08)))
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "a.gz"), a)
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(ValueError, match="bad.gz: cannot decompress"):
        datasets.read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError, match="missing"):
        datasets.read_idx(tmp_path / "missing")


def _write_fashion(d, n=5, labels=None, compress=True):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(n, 28, 28)).astype("u1")
    labs = np.arange(n, dtype="u1") % 10 if labels is None else labels
    for split in ("train", "t10k"):
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", labs)):
            raw = _idx(arr, 0x08)
            name = f"{split}-{kind}-ubyte"
            if compress:
                (d / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (d / name).write_bytes(raw)
    return imgs, labs


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_scales_and_flattens_row_by_row(tmp_path, compress):
    imgs, labs = _write_fashion(tmp_path, compress=compress)
    assert datasets.fashion_mnist_available(tmp_path)
    data = datasets.fashion_mnist("test", directory=tmp_path)
    assert data.x.shape == (5, 784) and data.x.dtype == np.float64 and data.x.flags.c_contiguous
    np.testing.assert_array_equal(data.x[2, 28:56], imgs[2, 1] / 255.0)
    np.testing.assert_array_equal(data.y, labs.astype(np.int64))
    assert data.image_shape == (28, 28) and data.classes[9] == "Ankle boot"


def test_fashion_mnist_errors_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("REFNET_FASHION_MNIST", raising=False)
    assert not datasets.fashion_mnist_available(tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist(directory=tmp_path)
    with pytest.raises(ValueError, match="split: expected 'train' or 'test'"):
        datasets.fashion_mnist("val", directory=tmp_path)
    _write_fashion(tmp_path, labels=np.array([0, 1, 2, 3, 12], dtype="u1"))
    with pytest.raises(ValueError, match="labels in 0..9"):
        datasets.fashion_mnist(directory=tmp_path)


def test_environment_variable_points_at_the_files(tmp_path, monkeypatch):
    _write_fashion(tmp_path)
    monkeypatch.setenv("REFNET_FASHION_MNIST", str(tmp_path))
    assert datasets.fashion_mnist_available()
    assert datasets.fashion_mnist().x.shape == (5, 784)
