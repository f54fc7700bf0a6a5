"""Image data sets refnet can read without a new dependency: the idx format and Fashion-MNIST.

The idx format (LeCun et al., the MNIST page; Fashion-MNIST uses it unchanged) is a
4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes,
then the values in C order, big-endian. Type codes: ``0x08`` uint8, ``0x09`` int8,
``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64. Files may be
gzip-compressed (``.gz``), as Debian's ``dataset-fashion-mnist`` ships them.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv:1708.07747; MIT licence): 60 000 train and
10 000 test 28×28 grey-scale images of 10 clothing classes. On Debian/Ubuntu::

    apt-get install dataset-fashion-mnist     # files in /usr/share/datasets/fashion-mnist

refnet never needs the data: the tests use tiny idx files they write themselves, and the
examples fall back to another task when :func:`fashion_mnist_available` is false.

>>> import numpy as np
>>> raw = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
>>> parse_idx(raw, name="example").tolist()
[[0, 1, 2], [3, 4, 5]]
"""
from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np

__all__ = ["parse_idx", "read_idx", "ImageData", "fashion_mnist", "fashion_mnist_available",
           "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES"]

#: where Debian's ``dataset-fashion-mnist`` puts the four files; ``$REFNET_FASHION_MNIST``
#: overrides it
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")

_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

#: largest array :func:`read_idx` builds (elements); Fashion-MNIST's train images are 4.7e7
_MAX_ELEMENTS = 2 ** 31

_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def parse_idx(data: bytes, *, name: str = "data") -> np.ndarray:
    """Decode the bytes of one idx file into an array of its shape (native byte order).

    Raises ``ValueError`` naming ``name`` for a wrong magic number, an unknown type code,
    a size product above 2**31 elements, or a length that is not the header's (too short
    or trailing bytes).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{name}: expected bytes; received {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{name}: not an idx file (expected the magic 00 00 <type> <ndim>; "
                         f"received {data[:4].hex(' ') or 'an empty file'})")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise ValueError(f"{name}: unknown idx type code 0x{code:02X} (expected one of "
                         + ", ".join(f"0x{c:02X}" for c in _IDX_TYPES) + ")")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated header ({len(data)} bytes for {ndim} sizes)")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count > _MAX_ELEMENTS:
        raise ValueError(f"{name}: header claims shape {shape}, {count} elements (limit 2**31)")
    dtype = _IDX_TYPES[code]
    want = header + count * dtype.itemsize
    if len(data) != want:
        raise ValueError(f"{name}: header claims shape {shape} of {dtype.name}, {want} bytes "
                         f"in all; the file has {len(data)}")
    values = np.frombuffer(data, dtype, count=count, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path) -> np.ndarray:
    """Read one idx file (gzip-compressed when its name ends in ``.gz``) into an array.

    Errors name the file: ``FileNotFoundError`` if it is missing, ``ValueError`` for a
    malformed file (see :func:`parse_idx`) or a corrupt gzip stream.
    """
    path = Path(os.fspath(path))
    if not path.is_file():
        raise FileNotFoundError(f"path: no idx file at {path}")
    try:
        if path.suffix == ".gz":
            data = _gunzip(path)
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot decompress ({exc})") from None
    return parse_idx(data, name=str(path))


def _gunzip(path: Path, limit: int = _MAX_ELEMENTS * 8 + 4 + 4 * 255) -> bytes:
    """Decompress in 16 MiB chunks, refusing output past ``limit`` bytes (a gzip bomb)."""
    chunks, total = [], 0
    with gzip.open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            total += len(chunk)
            if total > limit:
                raise ValueError(f"{path}: decompresses to more than {limit} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


@dataclasses.dataclass(frozen=True)
class ImageData:
    """A labelled image set: ``x`` of shape ``(n, pixels)`` (float64 in [0, 1], C order),
    ``y`` of shape ``(n,)`` (int64 class indices), the image shape and class names."""

    x: np.ndarray
    y: np.ndarray
    image_shape: tuple
    classes: tuple
    source: str


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _directory(directory) -> Path:
    if directory is None:
        directory = os.environ.get("REFNET_FASHION_MNIST", FASHION_MNIST_DIR)
    return Path(os.fspath(directory))


def fashion_mnist_available(directory=None) -> bool:
    """True when the four Fashion-MNIST idx files are in ``directory`` (default
    :data:`FASHION_MNIST_DIR` or ``$REFNET_FASHION_MNIST``), compressed or not."""
    d = _directory(directory)
    return all(_find(d, stem) is not None for pair in _FILES.values() for stem in pair)


def fashion_mnist(split: str = "train", *, directory=None) -> ImageData:
    """Fashion-MNIST's ``split`` (``"train"``: 60 000 images, ``"test"``: 10 000) as
    :class:`ImageData`, pixels scaled to [0, 1] by ``/ 255``, flattened row by row to 784.

    Raises ``FileNotFoundError`` naming the directory and the install command when the
    files are missing, ``ValueError`` when the images and labels disagree.
    """
    if split not in _FILES:
        raise ValueError(f"split: expected 'train' or 'test'; received {split!r}")
    d = _directory(directory)
    paths = [_find(d, stem) for stem in _FILES[split]]
    if None in paths:
        raise FileNotFoundError(f"directory: Fashion-MNIST's {split} files are not in {d} "
                                f"(apt-get install dataset-fashion-mnist, or set "
                                f"$REFNET_FASHION_MNIST)")
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{paths[0]}: expected uint8 images of shape (n, rows, cols); "
                         f"received {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1] or labels.dtype != np.uint8 or labels.max(initial=0) > 9:
        raise ValueError(f"{paths[1]}: expected {images.shape[0]} uint8 labels in 0..9; "
                         f"received {labels.dtype} {labels.shape}")
    x = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
    return ImageData(x=x, y=labels.astype(np.int64), image_shape=images.shape[1:],
                     classes=FASHION_MNIST_CLASSES, source=f"Fashion-MNIST {split} ({d})")
