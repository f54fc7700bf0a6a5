"""Weights files: a plain ``.npz`` that any framework can write and read.

Two formats; :func:`load` tells them apart by the ``format`` key. Strings are stored as
NumPy unicode arrays, never as objects, so every file loads with ``allow_pickle=False``.

Keys (format version 1: an :class:`refnet.MLP`)
-----------------------------------------------

``format``
    0-d string array ``"refnet.mlp"``.
``version``
    0-d int array ``1`` (optional).
``activation``
    0-d string array, a name or spec from :mod:`refnet.activations`.
``W1`` .. ``WL``
    Float arrays ``(n_l, n_{l-1})`` (float64 or float32; float16 and long double are
    refused).
``b1`` .. ``bL``
    Float arrays ``(n_l,)``; all absent for a bias-free network.

Writing a PyTorch ``nn.Sequential`` of ``Linear`` layers: ``np.savez(path,
format="refnet.mlp", version=1, activation="relu", W1=lin1.weight.detach().double().numpy(),
b1=..., ...)``.

Keys (format version 2: a :class:`refnet.Network`)
--------------------------------------------------

``format``
    0-d string array ``"refnet.network"``.
``version``
    0-d int array ``2`` (required).
``architecture``
    0-d string array holding JSON: ``{"in_shape": [...], "layers": [...]}``, ``in_shape``
    the feature shape of one input (``null`` for a sequence axis), each layer an object
    ``{"kind": ..., <settings>}``:

    ==========================  ===========================================================
    kind                        settings
    ==========================  ===========================================================
    ``"linear"``                ``n_in``, ``n_out`` (ints), ``bias`` (bool)
    ``"activation"``            ``activation``: a spec (``"tanh"``, ``"leaky_relu(slope=0.2)"``)
    ``"residual"``              ``block``: a list of layers, ``proj``: a ``"linear"`` layer
                                or ``null``
    ``"layer_norm"``            ``d`` (int), ``eps`` (number), ``affine``, ``bias`` (bools)
    ``"multihead_attention"``   ``d``, ``num_heads`` (ints), ``causal``, ``bias`` (bools)
    ``"mean_pool"``             no settings
    ``"flatten"``               no settings
    ==========================  ===========================================================
``<name>``
    One float array per parameter, named by :attr:`refnet.Network.param_names` (torch's
    ``named_parameters()`` names: ``"0.weight"``, ``"0.bias"``, ``"2.block.0.weight"``,
    ``"2.proj.weight"``, ``"3.in_proj_weight"``, ...), of the layer's parameter shape; no
    other keys.

Example architecture: ``{"in_shape": [3], "layers": [{"kind": "linear", "n_in": 3, "n_out":
4, "bias": true}, {"kind": "activation", "activation": "tanh"}, {"kind": "linear", "n_in": 4,
"n_out": 1, "bias": false}]}`` with arrays ``0.weight (4, 3)``, ``0.bias (4,)``, ``2.weight
(1, 4)``. Version-2 files are written byte-for-byte deterministically (fixed zip timestamps);
version-1 files are written by ``np.savez``, whose zip entries carry the time of writing.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import stat
import struct
import time
import zipfile
import zlib

import numpy as np

from .layers import (Activation, Flatten, LayerNorm, Linear, MeanPool, MultiheadAttention,
                     Residual)
from .mlp import MLP
from .network import Network

__all__ = ["save", "load", "FORMAT", "VERSION", "NETWORK_FORMAT", "NETWORK_VERSION",
           "atomic_write", "architecture"]

FORMAT = "refnet.mlp"
VERSION = 1
NETWORK_FORMAT = "refnet.network"
NETWORK_VERSION = 2
_META = ("format", "version", "architecture")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)          # the earliest zip timestamp: no time of writing
_MAX_HEADER = 10000                        # bytes of .npy header parsed at most (NumPy's default)


#: a temporary file of :func:`atomic_write` older than this (seconds) is stale: its writer was
#: killed (a live save renames or removes its file within a save's duration)
STALE_SECONDS = 600


def _temp_pattern(base: str):
    """The names :func:`atomic_write` gives its temporary files for target ``base``:
    ``.tmp-refnet-<16 hex>-<base>``, and ``.tmp-<8 chars><base>`` of earlier refnet versions
    (``tempfile.mkstemp``)."""
    b = re.escape(base)
    return re.compile(rf"\.tmp-refnet-[0-9a-f]{{16}}-{b}|\.tmp-[a-z0-9_]{{8}}{b}")


def _remove_stale_temps(d: str, base: str) -> None:
    """Remove this user's stale temporary files for ``base`` in ``d`` (named by
    :func:`_temp_pattern`, regular files, not modified for :data:`STALE_SECONDS`); any
    error (a race with another cleaner, permissions) leaves the file alone."""
    pat, now = _temp_pattern(base), time.time()
    try:
        names = [n for n in os.listdir(d) if n.startswith(".tmp-") and pat.fullmatch(n)]
    except OSError:
        return
    for n in names:
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
            if (stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_SECONDS
                    and st.st_uid == os.getuid()):
                os.unlink(p)
        except (OSError, AttributeError):
            pass


def atomic_write(path, write):
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it into
    place, so a reader never sees a partially written file.

    The file is created with mode 0666 minus the umask (like ``open(path, "w")``). On any
    failure the temporary file is removed. Temporary files are named
    ``.tmp-refnet-<16 hex>-<name>``; ones for the same ``<name>`` left by a killed writer
    (this user's, unmodified for :data:`STALE_SECONDS`) are removed by the next save."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _remove_stale_temps(d, base)
    for _ in range(100):
        tmp = os.path.join(d, f".tmp-refnet-{secrets.token_hex(8)}-{base}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(f"{path}: could not create a unique temporary file in {d}")
    done = False
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# ====================================================================== saving
def save(path, net) -> None:
    """Write ``net`` to ``path`` (``.npz``, format above), atomically.

    An :class:`refnet.MLP` is written as version 1 (readable by every refnet), a
    :class:`refnet.Network` as version 2. The round trip ``load(path)`` is bit-exact and
    returns the same type. Raises ``TypeError`` for anything else and ``ValueError`` for a
    network holding a layer kind this module cannot describe (nothing is written then).
    The file gets mode 0666 minus the umask; see :func:`atomic_write` for the temporary file
    (removed on failure; stale ones of killed saves of the same name are cleaned up).
    """
    if isinstance(net, MLP):
        arrays = _mlp_arrays(net)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    elif isinstance(net, Network):
        arrays = _network_arrays(net)
        atomic_write(path, lambda fh: _write_npz(fh, arrays))
    else:
        raise TypeError(f"net: expected a refnet.MLP or refnet.Network; received "
                        f"{type(net).__name__}")


def _mlp_arrays(net: MLP) -> dict:
    """The version-1 keys of ``net``."""
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
              "activation": np.array(net.activation)}
    for l, w in enumerate(net.weights, start=1):
        arrays[f"W{l}"] = w
        if net.has_bias:
            arrays[f"b{l}"] = net.biases[l - 1]
    return arrays


def _network_arrays(net: Network) -> dict:
    """The version-2 keys of ``net``: format, version, architecture, then its parameters."""
    text = json.dumps(architecture(net), allow_nan=False)
    arrays = {"format": np.array(NETWORK_FORMAT), "version": np.array(NETWORK_VERSION),
              "architecture": np.array(text)}
    for name, p in zip(net.param_names, net.param_arrays):
        arrays[name] = np.asarray(p)
    return arrays


def _write_npz(fh, arrays: dict) -> None:
    """``np.savez(fh, **arrays)`` (uncompressed, ``allow_pickle=False``) with a fixed
    timestamp and fixed attributes on every entry, so equal arrays give equal bytes."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, val in arrays.items():
            info = zipfile.ZipInfo(key + ".npy", date_time=_ZIP_DATE)
            info.create_system = 3                      # as on Unix, on every platform
            info.external_attr = 0o600 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(val), allow_pickle=False)


def architecture(net: Network) -> dict:
    """The version-2 ``architecture`` of ``net`` as a plain dict (JSON-ready):
    ``{"in_shape": [...], "layers": [{"kind": ..., <settings>}, ...]}``."""
    if not isinstance(net, Network):
        raise TypeError(f"net: expected a refnet.Network; received {type(net).__name__}")
    return {"in_shape": list(net.in_shape),
            "layers": [_describe(layer, f"layers[{i}]") for i, layer in enumerate(net.layers)]}


def _describe(layer, where: str) -> dict:
    """``{"kind": ..., <settings>}`` of one layer (a residual block recursively)."""
    entry = _KINDS.get(getattr(layer, "kind", None))
    if entry is None or type(layer) is not entry[0]:
        raise ValueError(f"{where}: cannot save a {type(layer).__name__} layer (kind "
                         f"{getattr(layer, 'kind', None)!r}); weights files know the kinds "
                         f"{sorted(_KINDS)}")
    if isinstance(layer, Residual):
        return {"kind": layer.kind,
                "block": [_describe(b, f"{where}.block[{j}]") for j, b in enumerate(layer.block)],
                "proj": None if layer.proj is None else _describe(layer.proj, f"{where}.proj")}
    out = {"kind": layer.kind}
    for key, v in layer.settings().items():
        if isinstance(v, (bool, np.bool_)):
            v = bool(v)
        elif isinstance(v, (int, np.integer)):
            v = int(v)
        elif isinstance(v, (float, np.floating)) and math.isfinite(v):
            v = float(v)
        elif not isinstance(v, str) and v is not None:
            raise ValueError(f"{where}: setting {key!r} = {v!r} of {layer.kind} is not a plain "
                             f"string, number, bool or None")
        out[key] = v
    return out


# ====================================================================== loading
class _FileError(ValueError):
    """A problem found in a weights file (its message already says where)."""


#: characters of a problem's description kept in a message (a hostile file's names or
#: strings could otherwise make it arbitrarily long)
_MAX_MESSAGE = 400


def _bad(path, msg):
    """The error for a problem in the file at ``path``: one line, at most
    :data:`_MAX_MESSAGE` characters of description."""
    msg = " ".join(str(msg).split("\n"))
    if len(msg) > _MAX_MESSAGE:
        msg = f"{msg[:_MAX_MESSAGE]}... ({len(msg) - _MAX_MESSAGE} more characters)"
    return _FileError(f"{_shown(path)}: not a valid refnet weights file: {msg}")


def load(path):
    """Read a network written by :func:`save` (or by hand, same keys).

    Returns an :class:`refnet.MLP` for a version-1 file (``format="refnet.mlp"``) and a
    :class:`refnet.Network` for a version-2 file (``format="refnet.network"``).

    Accepted dtypes: parameters float64 or float32 (both convert to float64 exactly);
    float16, long double, integer, bool and complex parameters are refused. ``format``,
    ``activation`` and ``architecture`` are 0-d unicode arrays, ``version`` a 0-d integer.

    Raises ``ValueError`` naming the file and the problem for: a missing file, a directory,
    FIFO, device or anything not a regular file (symlinks are followed), a single ``.npy``,
    something that is not a zip archive (a text file: its first bytes are shown), a
    truncated archive, zip members not named ``<key>.npy`` or present twice, an ``.npy``
    header that does not parse (NumPy's literal parser, never ``eval``), is longer than
    10000 bytes or claims more (or less) data than the member holds (checked before any
    allocation), object (pickled) arrays, an unknown format or unsupported version (not the
    integer 1 or 2), missing or unexpected keys, wrong ranks or shapes, refused dtypes and
    non-finite values; for version 2 also invalid JSON, an unknown layer kind (listing the
    known ones), missing or wrong settings, missing or extra parameter arrays, and layers
    that do not fit together. Lists of names in messages stop after 10 ("and N more").
    Never executes code from the file.
    """
    path = os.fspath(path)
    data = _read_npz(path)
    _check_string(path, data, "format")
    fmt = str(data["format"])
    if fmt == FORMAT:
        return _load_mlp(path, data)
    if fmt == NETWORK_FORMAT:
        return _load_network(path, data)
    raise _bad(path, f"format is {fmt!r:.80}, expected {FORMAT!r} (version 1) or "
                     f"{NETWORK_FORMAT!r} (version 2)")


def _names(names, limit: int = 10) -> str:
    """``['a', 'b', ...]`` of at most ``limit`` names, then ``and N more`` (short messages
    for files holding thousands of keys)."""
    names = sorted(names)
    shown = ", ".join(repr(n[:60] + "..." if len(n) > 60 else n) for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"[{shown}]{more}"


def _open_regular(path):
    """A binary file object on ``path`` if it is a regular file (after symlinks); a
    ValueError saying what it is otherwise. Opened non-blocking, so a FIFO never hangs."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ValueError(f"{_shown(path)}: no such file") from None
    except IsADirectoryError:
        raise _bad(path, "it is a directory, expected an .npz file") from None
    except OSError as e:
        raise _bad(path, f"cannot open it ({type(e).__name__}: {e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a character device" if stat.S_ISCHR(mode) else "a block device"
                if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise _bad(path, f"it is {what}, expected a regular .npz file")
    return os.fdopen(fd, "rb")


def _read_npz(path) -> dict:
    """Every array of the ``.npz`` at ``path``, read member by member with
    :func:`_read_member` (``allow_pickle=False``, headers checked before any allocation)."""
    with _open_regular(path) as fh:
        head = fh.read(16)
        if head.startswith(b"\x93NUMPY"):
            raise _bad(path, "expected an .npz archive, received a single .npy array (np.save); "
                             "write weights files with refnet.save or np.savez")
        if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise _bad(path, f"not an .npz (zip) archive: it starts with {head!r}")
        fh.seek(0)
        try:
            with zipfile.ZipFile(fh) as zf:
                infos = zf.infolist()
                _check_members(path, infos)
                return {i.filename[:-4]: _read_member(path, zf, i) for i in infos}
        except _FileError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                NotImplementedError, RuntimeError, zlib.error, struct.error) as e:
            msg = str(e).splitlines()[0][:160] if str(e) else ""
            raise _bad(path, f"not a readable .npz archive ({type(e).__name__}: {msg})") from None


def _check_members(path, infos) -> None:
    """Member names: each ``<key>.npy`` once."""
    names = [i.filename for i in infos]
    bad = [n for n in names if not n.endswith(".npy") or len(n) == 4]
    if bad:
        raise _bad(path, f"zip members must be '<key>.npy' arrays (as np.savez writes); found "
                         f"{len(bad)} other member(s) {_names(bad)}")
    seen, dup = set(), set()
    for n in names:
        (dup if n in seen else seen).add(n)
    if dup:
        raise _bad(path, f"duplicate zip members {_names(dup)}: which one is meant is ambiguous")


def _read_member(path, zf, info) -> np.ndarray:
    """One ``.npy`` member: its header parsed without evaluating code (NumPy's literal
    parser, header at most :data:`_MAX_HEADER` bytes), object dtypes refused, and the data
    size the header claims compared with the member's size before anything is allocated."""
    key = info.filename[:-4]
    where = f"array {key!r:.80}"
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                    f, max_header_size=_MAX_HEADER)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                    f, max_header_size=_MAX_HEADER)
            else:
                raise ValueError(f".npy format version {version} (expected 1.0 or 2.0)")
        except (ValueError, SyntaxError, TypeError) as e:
            msg = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            msg = re.sub(r"<(ast\.\w+) object at 0x[0-9a-f]+>", r"\1", msg)
            raise _bad(path, f"{where}: not a readable .npy header ({msg})") from None
        if dtype.hasobject:
            raise _bad(path, f"{where}: it holds object arrays, which are refused "
                             f"(allow_pickle=False; dtype {dtype})")
        if dtype.kind not in "fiuUb" or dtype.fields is not None or dtype.subdtype is not None:
            raise _bad(path, f"{where}: dtype {dtype} is not a weights-file dtype (float64 or "
                             f"float32 arrays, int and string scalars)")
        nbytes = math.prod(shape) * dtype.itemsize
        have = info.file_size - f.tell()
        if nbytes != have:
            raise _bad(path, f"{where}: its header claims shape {shape} of {dtype} "
                             f"({_size(nbytes)}) but the member holds {_size(max(have, 0))} of "
                             f"data (truncated or forged)")
        buf = f.read(nbytes)
    if len(buf) != nbytes:
        raise _bad(path, f"{where}: truncated data ({len(buf)} of {nbytes} bytes)")
    a = np.frombuffer(buf, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return np.array(a, dtype=dtype.newbyteorder("="), order="C")   # own, native, C order


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def _shown(path) -> str:
    """The path as printed in messages: as is, or its repr if it holds control characters
    (so every message stays on one line)."""
    if not isinstance(path, str):
        return repr(path)
    return path if path.isprintable() else repr(path)


def _check_string(path, data, key):
    if key not in data:
        raise _bad(path, f"missing key {key!r}; found keys {_names(data)}")
    if data[key].dtype.kind != "U" or data[key].shape != ():
        raise _bad(path, f"key {key!r} must be a 0-d string array; received dtype "
                         f"{data[key].dtype} shape {data[key].shape}")


def _check_version(path, data, want, required):
    """``version``, if present (or ``required``), must be the 0-d integer ``want``."""
    v = data.get("version")
    fmt = str(data["format"])
    if v is None:
        if required:
            raise _bad(path, f"missing key 'version' (expected {want} for format {fmt!r})")
        return
    if v.shape != () or v.dtype.kind not in "iu" or int(v) != want:
        shown = repr(v) if v.size <= 10 else f"an array of shape {v.shape} dtype {v.dtype}"
        raise _bad(path, f"version {shown:.80} is not supported (expected {want} for format "
                         f"{fmt!r}: a 0-d integer array)")


#: the dtypes weights may have in a file: both convert to float64 exactly and are what
#: frameworks write; float16/bfloat16 checkpoints (a lossy export, usually by mistake) and
#: long double (not exactly representable) are refused
WEIGHT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def _weight_dtype_problem(key, a):
    """Why array ``key`` cannot be a parameter (its dtype), or None."""
    if a.dtype in WEIGHT_DTYPES:
        return None
    hint = (" (half precision and long double are refused: convert explicitly with "
            ".astype(np.float64) if that is what you mean)") if a.dtype.kind == "f" else ""
    return (f"parameter {key!r} must be a float64 or float32 array; received dtype "
            f"{a.dtype}{hint}")


def _load_mlp(path, data) -> MLP:
    """Version 1: ``format``, ``version``, ``activation``, ``W1..WL``, ``b1..bL``."""
    _check_string(path, data, "activation")
    _check_version(path, data, VERSION, required=False)
    layer_keys = {k for k in data if re.fullmatch(r"[Wb][1-9][0-9]*", k)}
    extra = set(data) - layer_keys - {"format", "version", "activation"}
    if extra:
        raise _bad(path, f"unexpected keys {_names(extra)} (expected format, version, "
                         f"activation, W1..WL, b1..bL)")
    L = sum(1 for k in layer_keys if k[0] == "W")
    want_w = {f"W{l}" for l in range(1, L + 1)}
    if L == 0 or {k for k in layer_keys if k[0] == "W"} != want_w:
        raise _bad(path, f"expected weight keys W1..WL numbered without gaps; found "
                         f"{_names(k for k in layer_keys if k[0] == 'W')}")
    bkeys = {k for k in layer_keys if k[0] == "b"}
    if bkeys and bkeys != {f"b{l}" for l in range(1, L + 1)}:
        raise _bad(path, f"expected bias keys b1..b{L} (all or none); found {_names(bkeys)}")
    for k in sorted(layer_keys):
        problem = _weight_dtype_problem(k, data[k])
        if problem:
            raise _bad(path, problem)
    try:
        return MLP(tuple(data[f"W{l}"] for l in range(1, L + 1)),
                   tuple(data[f"b{l}"] for l in range(1, L + 1)) if bkeys else None,
                   str(data["activation"]))
    except (TypeError, ValueError) as e:
        raise _bad(path, str(e)) from None


def _load_network(path, data) -> Network:
    """Version 2: parse ``architecture``, build every layer from it and its arrays."""
    _check_version(path, data, NETWORK_VERSION, required=True)
    _check_string(path, data, "architecture")
    arch = _parse_json(path, str(data["architecture"]))
    params = _Params({k: v for k, v in data.items() if k not in _META})
    try:
        in_shape, descs = _fields(arch, "architecture", False, in_shape=_IN_SHAPE, layers=_LAYERS)
        layers = [_build(d, f"layers[{i}]", params.sub(f"{i}.")) for i, d in enumerate(descs)]
    except (TypeError, ValueError) as e:
        raise _bad(path, str(e)) from None
    extra = sorted(set(params.arrays) - set(params.taken))
    if extra:
        raise _bad(path, f"unexpected arrays {_names(extra)}: not parameters of the "
                         f"architecture (its parameters are {_names(params.taken)})")
    try:
        net = Network(layers, tuple(in_shape))
    except (TypeError, ValueError) as e:
        raise _bad(path, f"the layers do not fit together: {e}") from None
    if list(net.param_names) != params.taken:     # a builder bug, not a file problem
        raise _bad(path, f"internal: parameters read {params.taken} but the network's are "
                         f"{list(net.param_names)}")
    return net


def _parse_json(path, text: str):
    def reject(name):
        raise ValueError(f"{name} is not allowed")

    def unique(pairs):
        seen, dup = set(), set()
        for k, _ in pairs:
            (dup if k in seen else seen).add(k)
        if dup:
            raise ValueError(f"duplicate keys {_names(dup)}")
        return dict(pairs)
    try:
        return json.loads(text, parse_constant=reject, object_pairs_hook=unique)
    except (ValueError, RecursionError) as e:   # JSONDecodeError is a ValueError
        raise _bad(path, f"'architecture' is not valid JSON ({type(e).__name__}: {e}); "
                         f"received {text[:80]!r}{'...' if len(text) > 80 else ''}") from None


class _Params:
    """The file's parameter arrays, handed out by torch name under a prefix (``"2.block.0."``),
    each checked for dtype, shape and finiteness; ``taken`` records the names in order."""

    def __init__(self, arrays, prefix="", taken=None):
        self.arrays, self.prefix = arrays, prefix
        self.taken = [] if taken is None else taken

    def sub(self, prefix: str) -> "_Params":
        return _Params(self.arrays, self.prefix + prefix, self.taken)

    def __call__(self, name: str, shape: tuple, where: str) -> np.ndarray:
        key = self.prefix + name
        if key not in self.arrays:
            raise _FileError(f"{where}: missing parameter array {key!r} of shape {shape}; the "
                             f"file's parameter arrays are {_names(self.arrays)}")
        a = self.arrays[key]
        problem = _weight_dtype_problem(key, a)
        if problem:
            raise _FileError(f"{where}: {problem}")
        if a.shape != tuple(shape):
            raise _FileError(f"{where}: parameter {key!r} has shape {a.shape}, expected "
                             f"{tuple(shape)} from the architecture")
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise _FileError(f"{where}: parameter {key!r} has {bad} non-finite entries "
                             f"(nan or inf)")
        self.taken.append(key)
        return a


# ---------------------------------------------------------------------- settings checks
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


_POS_INT = ("a positive integer", lambda v: _is_int(v) and v >= 1)
_BOOL = ("true or false", lambda v: isinstance(v, bool))
_STR = ("a string", lambda v: isinstance(v, str))
_NUMBER = ("a number", lambda v: (_is_int(v) or isinstance(v, float)) and math.isfinite(v))
_IN_SHAPE = ("a non-empty list of positive integers or null (a sequence axis)",
             lambda v: isinstance(v, list) and len(v) > 0
             and all(s is None or (_is_int(s) and s >= 1) for s in v))
_LAYERS = ("a non-empty list of layer objects",
           lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(d, dict) for d in v))
_LAYER_OR_NULL = ("a layer object or null", lambda v: v is None or isinstance(v, dict))


def _fields(desc, where: str, _layer=True, **spec) -> tuple:
    """The values of the keys ``spec`` names (``key=(description, check)``), in that order,
    besides ``"kind"`` for a layer; ValueError for a non-object, a missing, unexpected or
    ill-typed key."""
    if not isinstance(desc, dict):
        raise _FileError(f"{where}: expected a JSON object; received {type(desc).__name__} "
                         f"{desc!r:.80}")
    extra = sorted(set(desc) - set(spec) - ({"kind"} if _layer else set()))
    if extra:
        raise _FileError(f"{where}: unexpected settings {_names(extra)} (expected "
                         f"{sorted(spec)})")
    out = []
    for key, (what, ok) in spec.items():
        if key not in desc:
            raise _FileError(f"{where}: missing setting {key!r} (expected {what})")
        if not ok(desc[key]):
            raise _FileError(f"{where}: setting {key!r} must be {what}; received "
                             f"{desc[key]!r:.80}")
        out.append(desc[key])
    return tuple(out)


# ---------------------------------------------------------------------- builders
def _build(desc, where: str, take: _Params):
    """The layer described by ``desc``, through the ``kind`` dispatch table."""
    if not isinstance(desc, dict) or "kind" not in desc:
        raise _FileError(f"{where}: expected a layer object with a 'kind'; received "
                         f"{desc!r:.80}")
    kind = desc["kind"]
    if not isinstance(kind, str) or kind not in _KINDS:
        raise _FileError(f"{where}: unknown layer kind {kind!r:.80}; known kinds are "
                         f"{sorted(_KINDS)}")
    where = f"{where} ({kind})"
    try:
        return _KINDS[kind][1](desc, where, take)
    except _FileError:
        raise
    except (TypeError, ValueError) as e:    # a constructor's complaint, with the place
        raise _FileError(f"{where}: {e}") from None


def _build_linear(desc, where, take):
    n_in, n_out, bias = _fields(desc, where, n_in=_POS_INT, n_out=_POS_INT, bias=_BOOL)
    w = take("weight", (n_out, n_in), where)
    return Linear(w, take("bias", (n_out,), where) if bias else None)


def _build_activation(desc, where, take):
    spec, = _fields(desc, where, activation=_STR)
    return Activation(spec)


def _build_residual(desc, where, take):
    block, proj = _fields(desc, where, block=_LAYERS, proj=_LAYER_OR_NULL)
    layers = [_build(d, f"{where}.block[{j}]", take.sub(f"block.{j}."))
              for j, d in enumerate(block)]
    if proj is not None and proj.get("kind") != "linear":
        raise _FileError(f"{where}.proj: expected a 'linear' layer or null; received kind "
                         f"{proj.get('kind')!r}")
    p = None if proj is None else _build(proj, f"{where}.proj", take.sub("proj."))
    return Residual(layers, p)


def _build_mean_pool(desc, where, take):
    _fields(desc, where)
    return MeanPool()


def _build_flatten(desc, where, take):
    _fields(desc, where)
    return Flatten()


def _build_layer_norm(desc, where, take):
    d, eps, affine, bias = _fields(desc, where, d=_POS_INT, eps=_NUMBER, affine=_BOOL,
                                   bias=_BOOL)
    if bias and not affine:
        raise _FileError(f"{where}: bias = true needs affine = true (torch "
                         f"elementwise_affine=False has neither weight nor bias)")
    w = take("weight", (d,), where) if affine else None
    b = take("bias", (d,), where) if bias else None
    return LayerNorm(d, float(eps), affine, w, b)


def _build_attention(desc, where, take):
    d, h, causal, bias = _fields(desc, where, d=_POS_INT, num_heads=_POS_INT,
                                 causal=_BOOL, bias=_BOOL)
    if d % h:
        raise _FileError(f"{where}: num_heads = {h} does not divide d = {d}")
    w = take("in_proj_weight", (3 * d, d), where)
    b = take("in_proj_bias", (3 * d,), where) if bias else None
    wo = take("out_proj.weight", (d, d), where)
    bo = take("out_proj.bias", (d,), where) if bias else None
    return MultiheadAttention(w, b, wo, bo, num_heads=h, causal=causal)


#: kind -> (layer class, builder(desc, where, take) -> layer); ``take(name, shape, where)``
#: returns the checked array of the parameter with that torch name under the layer's prefix.
_KINDS = {
    "linear": (Linear, _build_linear),
    "activation": (Activation, _build_activation),
    "residual": (Residual, _build_residual),
    "mean_pool": (MeanPool, _build_mean_pool),
    "flatten": (Flatten, _build_flatten),
    "layer_norm": (LayerNorm, _build_layer_norm),
    "multihead_attention": (MultiheadAttention, _build_attention),
}
