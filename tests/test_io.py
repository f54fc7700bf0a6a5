"""Weights files (refnet/io.py): version 1 (MLP) and version 2 (Network with architecture)."""
import json
import time

import numpy as np
import pytest

import refnet
from refnet import io
from hypothesis import given

from refnet.cases import build_network
from refnet.layers import (Activation, Flatten, LayerNorm, Linear, MeanPool, MultiheadAttention,
                           Residual)
from refnet.strategies import architectures, seeds
from refnet.layers.base import Layer
from refnet.network import Network


def _lin(rng, n_out, n_in, bias=True):
    return Linear(rng.standard_normal((n_out, n_in)) / np.sqrt(n_in),
                  0.1 * rng.standard_normal(n_out) if bias else None)


def _vector_net(seed=0):
    """Every vector kind: Linear with and without bias, activations with settings, LayerNorm
    (affine with and without bias, not affine), a Residual without proj, a Residual with
    proj holding a nested Residual."""
    rng = np.random.default_rng(seed)
    inner = Residual([_lin(rng, 5, 5), Activation("gelu(approximate='tanh')"),
                      LayerNorm(5, eps=1e-3, affine=False)])
    return Network([
        _lin(rng, 4, 3), Activation("leaky_relu(slope=0.2)"),
        Residual([LayerNorm(4, weight=1 + 0.1 * rng.standard_normal(4),
                            bias=0.1 * rng.standard_normal(4)),
                  _lin(rng, 4, 4, bias=False), Activation("tanh")]),
        Residual([_lin(rng, 5, 4), inner, Activation("elu(alpha=0.5)"), _lin(rng, 5, 5)],
                 proj=_lin(rng, 5, 4)),
        _lin(rng, 2, 5, bias=False)], in_shape=3)


def _sequence_net(seed=0):
    """A sequence model (in_shape (None, d)): attention with and without bias, causal,
    inside a residual block, then a mean pool."""
    rng = np.random.default_rng(seed)
    att = MultiheadAttention.init(4, 2, causal=True, bias=True, seed=seed + 1)
    att = att.with_params([p + 0.1 * rng.standard_normal(p.shape) for p in att.params])
    return Network([
        _lin(rng, 4, 3), att, Activation("silu"),
        Residual([LayerNorm(4, weight=1 + 0.1 * rng.standard_normal(4), bias=None),
                  MultiheadAttention.init(4, 4, causal=False, bias=False, seed=seed + 2),
                  _lin(rng, 4, 4)]),
        MeanPool(), _lin(rng, 1, 4)], in_shape=(None, 3))


def _flatten_net(seed=0):
    """A fixed-length sequence model ending in Flatten."""
    rng = np.random.default_rng(seed)
    return Network([_lin(rng, 2, 3), MultiheadAttention.init(2, 1, seed=seed), Flatten(),
                    Activation("sigmoid"), _lin(rng, 1, 10)], in_shape=(5, 3))


NETS = {"vector": _vector_net, "sequence": _sequence_net, "flatten": _flatten_net}


def _inputs(net, seed=1):
    shape = tuple(4 if s is None else s for s in net.in_shape)
    return np.random.default_rng(seed).standard_normal((3,) + shape)


def _kinds(layers):
    out = set()
    for layer in layers:
        out.add(layer.kind)
        if isinstance(layer, Residual):
            out |= _kinds(layer.block) | ({layer.proj.kind} if layer.proj else set())
    return out


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _good_arrays():
    """A hand-made valid v2 file: Linear(3 -> 4, bias), tanh, Linear(4 -> 2, no bias)."""
    arch = {"in_shape": [3], "layers": [
        {"kind": "linear", "n_in": 3, "n_out": 4, "bias": True},
        {"kind": "activation", "activation": "tanh"},
        {"kind": "linear", "n_in": 4, "n_out": 2, "bias": False}]}
    return {"format": np.array("refnet.network"), "version": np.array(2),
            "architecture": np.array(json.dumps(arch)),
            "0.weight": np.ones((4, 3)), "0.bias": np.zeros(4), "2.weight": np.ones((2, 4))}


def _with_arch(**change):
    """The good file with its architecture JSON edited: ``change`` maps a path like
    ``"layers.0.n_in"`` (``/`` for dots in keys not needed) to a new value (or to DEL)."""
    arrays = _good_arrays()
    arch = json.loads(str(arrays["architecture"]))
    for where, value in change.items():
        *head, last = where.split(".")
        node = arch
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        key = int(last) if isinstance(node, list) else last
        if value is DEL:
            del node[key]
        else:
            node[key] = value
    arrays["architecture"] = np.array(json.dumps(arch))
    return arrays


DEL = object()


# ====================================================================== round trips
@pytest.mark.parametrize("name", sorted(NETS))
def test_v2_round_trip_equal_and_same_outputs(tmp_path, name):
    """save/load of a Network gives an equal Network with bit-identical outputs and the
    same torch-style parameter names."""
    net = NETS[name]()
    p = tmp_path / "net.npz"
    refnet.save(p, net)
    net2 = refnet.load(p)
    assert type(net2) is Network and net2 == net
    assert net2.in_shape == net.in_shape and net2.param_names == net.param_names
    np.testing.assert_array_equal(net2.params, net.params)
    x = _inputs(net)
    np.testing.assert_array_equal(net2(x), net(x))
    assert not (net2 == net.with_params(net.params + 1e-12))   # equality can fail


@given(architectures(max_depth=5, max_width=4), seeds)
def test_v2_round_trip_drawn_architectures(plan_shape, seed):
    """Any drawn architecture (every kind, vector and sequence inputs) round-trips."""
    import os
    import tempfile
    plan, in_shape = plan_shape
    net = build_network(plan, in_shape, seed=seed)
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "net.npz")
        refnet.save(p, net)
        net2 = refnet.load(p)
    assert net2 == net and net2.param_names == net.param_names
    x = _inputs(net, seed=seed % 2**32)
    np.testing.assert_array_equal(net2(x), net(x))


def test_round_trip_nets_cover_every_known_kind():
    """The round-trip networks use every kind of the dispatch table (a new kind in the table
    needs a network here), nested Residual with proj, and a sequence model."""
    used = set().union(*(_kinds(f().layers) for f in NETS.values()))
    assert used == set(io._KINDS), sorted(set(io._KINDS) ^ used)
    vec = _vector_net()
    assert vec.layers[3].proj is not None and isinstance(vec.layers[3].block[1], Residual)
    assert _sequence_net().in_shape == (None, 3)


def test_v2_file_layout(tmp_path):
    """The keys, their dtypes and the architecture JSON, exactly as documented."""
    net = _vector_net()
    p = tmp_path / "net.npz"
    refnet.save(p, net)
    with np.load(p, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    assert list(data) == ["format", "version", "architecture"] + list(net.param_names)
    assert str(data["format"]) == "refnet.network" and int(data["version"]) == 2
    assert data["architecture"].dtype.kind == "U" and data["architecture"].shape == ()
    arch = json.loads(str(data["architecture"]))
    assert arch["in_shape"] == [3]
    assert arch["layers"][0] == {"kind": "linear", "n_in": 3, "n_out": 4, "bias": True}
    assert arch["layers"][1] == {"kind": "activation", "activation": "leaky_relu(slope=0.2)"}
    res = arch["layers"][3]
    assert res["kind"] == "residual" and res["proj"] == {"kind": "linear", "n_in": 4,
                                                         "n_out": 5, "bias": True}
    assert res["block"][1]["block"][1] == {"kind": "activation",
                                           "activation": "gelu(approximate='tanh')"}
    assert arch["layers"][2]["proj"] is None
    assert arch["layers"][2]["block"][0] == {"kind": "layer_norm", "d": 4, "eps": 1e-5,
                                              "affine": True, "bias": True}
    assert "3.block.1.block.0.weight" in data and "3.proj.bias" in data
    assert "2.block.0.weight" in data and "2.block.0.bias" in data
    for name, a in zip(net.param_names, net.param_arrays):
        assert data[name].dtype == np.float64
        np.testing.assert_array_equal(data[name], a)
    seq = json.loads(json.dumps(io.architecture(_sequence_net())))
    assert seq["in_shape"] == [None, 3]
    assert seq["layers"][1] == {"kind": "multihead_attention", "d": 4, "num_heads": 2,
                                "causal": True, "bias": True}
    assert seq["layers"][4] == {"kind": "mean_pool"}


def test_hand_made_v2_file_loads(tmp_path):
    """A file written with plain np.savez by the documented keys loads."""
    net = refnet.load(_write(tmp_path / "ok.npz", **_good_arrays()))
    assert isinstance(net, Network) and net.param_names == ("0.weight", "0.bias", "2.weight")
    np.testing.assert_allclose(net(np.ones((1, 3))), np.full((1, 2), 4 * np.tanh(3.0)))
    arrays = dict(_good_arrays(), **{"0.weight": np.ones((4, 3), dtype=np.float32)})
    assert refnet.load(_write(tmp_path / "f32.npz", **arrays)) == net


# ====================================================================== version 1
def test_mlp_is_still_written_as_v1(tmp_path):
    """save(MLP) writes the version-1 keys, and load gives back an equal MLP."""
    mlp = refnet.MLP.init([3, 5, 2], activation="tanh", seed=3)
    p = tmp_path / "mlp.npz"
    refnet.save(p, mlp)
    with np.load(p, allow_pickle=False) as z:
        assert sorted(z.files) == ["W1", "W2", "activation", "b1", "b2", "format", "version"]
        assert str(z["format"]) == "refnet.mlp" and int(z["version"]) == 1
    back = refnet.load(p)
    assert type(back) is refnet.MLP and back == mlp


def test_v1_file_written_by_hand_still_loads(tmp_path):
    """A version-1 file as the v1 docs describe (also without the optional version key)."""
    rng = np.random.default_rng(0)
    W1, b1, W2 = rng.standard_normal((4, 3)), rng.standard_normal(4), rng.standard_normal((1, 4))
    p = _write(tmp_path / "v1.npz", format=np.array("refnet.mlp"), version=np.array(1),
               activation=np.array("relu"), W1=W1, W2=W2)
    net = refnet.load(p)
    assert type(net) is refnet.MLP and net.widths == (3, 4, 1) and not net.has_bias
    p = _write(tmp_path / "nov.npz", format=np.array("refnet.mlp"),
               activation=np.array("leaky_relu(slope=0.3)"), W1=W1, b1=b1, W2=W2,
               b2=np.zeros(1))
    net = refnet.load(p)
    assert net.activation == "leaky_relu(slope=0.3)" and net.has_bias


def test_network_of_an_mlp_round_trips_as_network(tmp_path):
    """An MLP's Network is saved as v2 and computes the same function after loading."""
    mlp = refnet.MLP.init([2, 6, 6, 1], activation="softplus", seed=1)
    p = tmp_path / "n.npz"
    refnet.save(p, mlp.network)
    net = refnet.load(p)
    assert type(net) is Network and net == mlp.network
    x = np.random.default_rng(0).standard_normal((5, 2))
    np.testing.assert_array_equal(net(x), mlp(x))


# ====================================================================== determinism
def test_v2_files_are_byte_for_byte_deterministic(tmp_path, monkeypatch):
    """Equal networks give equal bytes, even written at different times (v2 fixes the zip
    timestamps; np.savez would embed the time of writing)."""
    a, b, c = tmp_path / "a.npz", tmp_path / "b.npz", tmp_path / "c.npz"
    refnet.save(a, _sequence_net())
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 400 * 86400.0)
    refnet.save(b, _sequence_net())                # rebuilt: new arrays, same values
    assert a.read_bytes() == b.read_bytes()
    net = _sequence_net()
    refnet.save(c, net.with_params(net.params * (1 + 2 ** -52)))
    assert c.read_bytes() != a.read_bytes()


def test_v1_files_have_deterministic_content(tmp_path):
    """v1 is written by np.savez, whose zip entries carry a timestamp, so only the loaded
    content is compared: same keys, same arrays, same dtypes."""
    mlp = refnet.MLP.init([3, 4, 2], seed=5)
    contents = []
    for name in ("a.npz", "b.npz"):
        refnet.save(tmp_path / name, mlp)
        with np.load(tmp_path / name, allow_pickle=False) as z:
            contents.append({k: z[k] for k in z.files})
    a, b = contents
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


# ====================================================================== saving errors
def test_save_v2_is_atomic_on_failure(tmp_path, monkeypatch):
    """A write failing halfway leaves the existing file untouched and no temporary file."""
    p = tmp_path / "net.npz"
    refnet.save(p, _vector_net())
    before = p.read_bytes()
    real, calls = np.lib.format.write_array, []

    def fail_on_fifth(*a, **k):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real(*a, **k)
    monkeypatch.setattr(np.lib.format, "write_array", fail_on_fifth)
    with pytest.raises(OSError, match="disk full"):
        refnet.save(p, _vector_net(seed=1))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["net.npz"]


class _Custom(Layer):
    kind = "custom"


def test_save_refuses_what_it_cannot_describe(tmp_path):
    """A layer kind outside the table, or something that is not a network: nothing written."""
    net = Network([Linear(np.ones((2, 2))), Residual([_Custom()])], in_shape=2)
    with pytest.raises(ValueError, match=r"layers\[1\]\.block\[0\]: cannot save a _Custom "
                                         r"layer \(kind 'custom'\).*\['activation', "):
        refnet.save(tmp_path / "x.npz", net)
    with pytest.raises(TypeError, match="refnet.MLP or refnet.Network"):
        refnet.save(tmp_path / "x.npz", [np.ones((2, 2))])
    assert list(tmp_path.iterdir()) == []


# ====================================================================== malformed files
KNOWN = (r"known kinds are \['activation', 'flatten', 'layer_norm', 'linear', 'mean_pool', "
         r"'multihead_attention', 'residual'\]")

CORRUPT = {
    "unknown kind": (_with_arch(**{"layers.1": {"kind": "conv2d", "channels": 3}}),
                     r"layers\[1\]: unknown layer kind 'conv2d'; " + KNOWN),
    "kind not a string": (_with_arch(**{"layers.1.kind": 7}), r"unknown layer kind 7"),
    "layer without kind": (_with_arch(**{"layers.1.kind": DEL}),
                           r"layers\[1\]: expected a layer object with a 'kind'"),
    "missing parameter": ({k: v for k, v in _good_arrays().items() if k != "0.bias"},
                          r"layers\[0\] \(linear\): missing parameter array '0.bias' of "
                          r"shape \(4,\)"),
    "extra parameter": (dict(_good_arrays(), **{"2.bias": np.zeros(2)}),
                        r"unexpected arrays \['2.bias'\]: not parameters of the architecture"),
    "extra key": (dict(_good_arrays(), notes=np.array("hi")), r"unexpected arrays \['notes'\]"),
    "wrong shape": (dict(_good_arrays(), **{"0.weight": np.ones((3, 4))}),
                    r"parameter '0.weight' has shape \(3, 4\), expected \(4, 3\)"),
    "int parameter": (dict(_good_arrays(), **{"2.weight": np.ones((2, 4), dtype=int)}),
                      r"parameter '2.weight' must be a float64 or float32 array; received dtype int"),
    "nan parameter": (dict(_good_arrays(), **{"0.bias": np.array([0, np.nan, 0, 0.])}),
                      r"parameter '0.bias' has 1 non-finite entries"),
    "inf parameter": (dict(_good_arrays(), **{"2.weight": np.full((2, 4), -np.inf)}),
                      r"parameter '2.weight' has 8 non-finite entries"),
    "bad JSON": (dict(_good_arrays(), architecture=np.array('{"in_shape": [3], "layers": [')),
                 r"'architecture' is not valid JSON \(JSONDecodeError"),
    "NaN in JSON": (dict(_good_arrays(), architecture=np.array(
        str(_good_arrays()["architecture"]).replace('"n_in": 3', '"n_in": NaN'))),
        r"'architecture' is not valid JSON .*NaN is not allowed"),
    "duplicate JSON key": (dict(_good_arrays(), architecture=np.array(
        str(_good_arrays()["architecture"]).replace('"n_in": 3', '"n_in": 3, "n_in": 5'))),
        r"not valid JSON .*duplicate keys \['n_in'\]"),
    "architecture not an object": (dict(_good_arrays(), architecture=np.array("[1, 2]")),
                                   r"architecture: expected a JSON object; received list"),
    "architecture not a string": (dict(_good_arrays(), architecture=np.ones(3)),
                                  r"key 'architecture' must be a 0-d string array"),
    "missing architecture": ({k: v for k, v in _good_arrays().items() if k != "architecture"},
                             r"missing key 'architecture'"),
    "unsupported version": (dict(_good_arrays(), version=np.array(3)),
                            r"version array\(3\) is not supported \(expected 2 for format "
                            r"'refnet.network': a 0-d integer array\)"),
    "version 1 with network format": (dict(_good_arrays(), version=np.array(1)),
                                      r"version array\(1\) is not supported"),
    "missing version": ({k: v for k, v in _good_arrays().items() if k != "version"},
                        r"missing key 'version' \(expected 2"),
    "unknown format": (dict(_good_arrays(), format=np.array("refnet.graph")),
                       r"format is 'refnet.graph', expected 'refnet.mlp' \(version 1\) or "
                       r"'refnet.network' \(version 2\)"),
    "missing in_shape": (_with_arch(in_shape=DEL), r"architecture: missing setting 'in_shape'"),
    "bad in_shape": (_with_arch(in_shape=[3, 0]), r"setting 'in_shape' must be a non-empty "
                                                  r"list of positive integers or null"),
    "empty layers": (_with_arch(layers=[]), r"setting 'layers' must be a non-empty list"),
    "unexpected top-level key": (_with_arch(kind="mlp"),
                                 r"architecture: unexpected settings \['kind'\]"),
    "missing setting": (_with_arch(**{"layers.0.n_out": DEL}),
                        r"layers\[0\] \(linear\): missing setting 'n_out' \(expected a "
                        r"positive integer\)"),
    "unexpected setting": (_with_arch(**{"layers.0.dropout": 0.5}),
                           r"layers\[0\] \(linear\): unexpected settings \['dropout'\]"),
    "float size": (_with_arch(**{"layers.0.n_in": 3.0}),
                   r"setting 'n_in' must be a positive integer; received 3.0"),
    "bool size": (_with_arch(**{"layers.0.n_in": True}), r"setting 'n_in' must be a positive"),
    "int bias flag": (_with_arch(**{"layers.0.bias": 1}),
                      r"setting 'bias' must be true or false; received 1"),
    "bad activation spec": (_with_arch(**{"layers.1.activation": "swish"}),
                            r"layers\[1\] \(activation\): activation: .*swish"),
    "layers do not fit": (dict(_with_arch(**{"layers.2.n_in": 5}),
                               **{"2.weight": np.ones((2, 5))}),
                          r"the layers do not fit together: layers\[2\]: linear: expected "
                          r"inputs whose last axis has 5"),
}


def _residual_file(block, proj, arrays):
    arch = {"in_shape": [2], "layers": [{"kind": "residual", "block": block, "proj": proj}]}
    return {"format": np.array("refnet.network"), "version": np.array(2),
            "architecture": np.array(json.dumps(arch)), **arrays}


_LIN22 = {"kind": "linear", "n_in": 2, "n_out": 2, "bias": False}
CORRUPT.update({
    "proj not linear": (_residual_file([_LIN22], {"kind": "activation", "activation": "tanh"},
                                       {"0.block.0.weight": np.ones((2, 2))}),
                        r"layers\[0\] \(residual\)\.proj: expected a 'linear' layer or null"),
    "empty block": (_residual_file([], None, {}), r"setting 'block' must be a non-empty list"),
    "nested missing parameter": (_residual_file([_LIN22], _LIN22,
                                                {"0.block.0.weight": np.ones((2, 2))}),
                                 r"layers\[0\] \(residual\)\.proj \(linear\): missing parameter "
                                 r"array '0.proj.weight'"),
    "nested unknown kind": (_residual_file([{"kind": "dropout"}], None, {}),
                            r"layers\[0\] \(residual\)\.block\[0\]: unknown layer kind "
                            r"'dropout'; " + KNOWN),
    "heads do not divide d": (
        {"format": np.array("refnet.network"), "version": np.array(2),
         "architecture": np.array(json.dumps({"in_shape": [None, 4], "layers": [
             {"kind": "multihead_attention", "d": 4, "num_heads": 3, "causal": False,
              "bias": False}]})),
         "0.in_proj_weight": np.ones((12, 4)), "0.out_proj.weight": np.ones((4, 4))},
        r"layers\[0\] \(multihead_attention\): num_heads = 3 does not divide d = 4"),
    "layer norm bias without affine": (
        _with_arch(**{"layers.1": {"kind": "layer_norm", "d": 4, "eps": 1e-5, "affine": False,
                                   "bias": True}}),
        r"layers\[1\] \(layer_norm\): bias = true needs affine = true"),
    "layer norm negative eps": (
        dict(_with_arch(**{"layers.1": {"kind": "layer_norm", "d": 4, "eps": -1,
                                        "affine": True, "bias": False}}),
             **{"1.weight": np.ones(4)}),
        r"layers\[1\] \(layer_norm\): eps: expected a finite float > 0; received -1"),
    "layer norm missing weight": (
        _with_arch(**{"layers.1": {"kind": "layer_norm", "d": 4, "eps": 1e-5, "affine": True,
                                   "bias": False}}),
        r"layers\[1\] \(layer_norm\): missing parameter array '1.weight' of shape \(4,\)"),
    "pool with settings": (_with_arch(**{"layers.1": {"kind": "mean_pool", "axis": 1}}),
                           r"layers\[1\] \(mean_pool\): unexpected settings \['axis'\]"),
})


@pytest.mark.parametrize("what", sorted(CORRUPT))
def test_malformed_v2_file_raises_value_error_naming_file_and_problem(tmp_path, what):
    arrays, message = CORRUPT[what]
    p = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message) as info:
        refnet.load(p)
    assert str(info.value).startswith(f"{p}: not a valid refnet weights file: "), info.value


def test_the_corrupt_files_differ_from_a_good_one_in_one_respect(tmp_path):
    """The good file behind the corruption cases loads (so each case fails for its reason)."""
    assert isinstance(refnet.load(_write(tmp_path / "ok.npz", **_good_arrays())), Network)
    ok = _residual_file([_LIN22], _LIN22, {"0.block.0.weight": np.ones((2, 2)),
                                           "0.proj.weight": np.eye(2)})
    net = refnet.load(_write(tmp_path / "res.npz", **ok))
    np.testing.assert_array_equal(net(np.eye(2)), np.full((2, 2), 1.0) + np.eye(2))


class _Payload:
    """Unpickling this object would create a file: proof that nothing was executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_never_unpickles(tmp_path):
    """Object arrays (which need pickle) in a v2 file are refused without running them."""
    marker = tmp_path / "pwned"
    arrays = dict(_good_arrays(), **{"0.bias": np.array([_Payload(marker)], dtype=object)})
    p = tmp_path / "evil.npz"
    np.savez(p, allow_pickle=True, **arrays)
    with pytest.raises(ValueError, match=r"evil.npz: .*object arrays, which are refused"):
        refnet.load(p)
    assert not marker.exists()


def test_unreadable_files(tmp_path):
    """Not a zip, a truncated v2 archive, a single .npy, a missing file."""
    p = tmp_path / "net.npz"
    refnet.save(p, _vector_net())
    t = tmp_path / "trunc.npz"
    t.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])
    with pytest.raises(ValueError, match=r"trunc.npz: .*not a readable .npz archive"):
        refnet.load(t)
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=r"junk.npz: "):
        refnet.load(tmp_path / "junk.npz")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(ValueError, match=r"one.npy: .*received a single .npy array"):
        refnet.load(tmp_path / "one.npy")
    with pytest.raises(ValueError, match=r"missing.npz: no such file"):
        refnet.load(tmp_path / "missing.npz")


# ====================================================================== permissions, temp files
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_save_honours_the_umask(tmp_path, umask):
    """The file gets 0666 minus the umask (like open()), not always 0600."""
    import os
    old = os.umask(umask)
    try:
        refnet.save(tmp_path / "v1.npz", refnet.MLP.init([2, 2], seed=0))
        refnet.save(tmp_path / "v2.npz", _vector_net())
    finally:
        os.umask(old)
    for name in ("v1.npz", "v2.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_save_cleans_up_its_own_stale_temporary_files_only(tmp_path):
    """Stale temporaries of this name (both naming patterns, older than STALE_SECONDS) are
    removed; fresh ones, ones for another name and other files are left alone."""
    import os
    old = time.time() - io.STALE_SECONDS - 60
    names = {".tmp-refnet-0123456789abcdef-net.npz": False,     # stale, this name: removed
             ".tmp-abc_e9z1net.npz": False,                       # earlier versions' pattern
             ".tmp-refnet-fedcba9876543210-net.npz.fresh": True,  # another target name
             ".tmp-refnet-fedcba9876543210-other.npz": True,      # another target
             ".tmp-notours-net.npz": True,                        # not our pattern
             ".tmp-refnet-00000000000000000-net.npz": True}       # 17 hex: not our pattern
    for n in names:
        (tmp_path / n).write_bytes(b"partial")
        os.utime(tmp_path / n, (old, old))
    fresh = tmp_path / ".tmp-refnet-1111111111111111-net.npz"
    fresh.write_bytes(b"being written right now")                # a concurrent save: kept
    refnet.save(tmp_path / "net.npz", _vector_net())
    left = {f.name for f in tmp_path.iterdir()}
    assert left == {"net.npz", fresh.name} | {n for n, keep in names.items() if keep}


def test_save_failure_leaves_no_temporary_file_v1(tmp_path, monkeypatch):
    """A failing np.savez (version 1): the exception propagates, nothing is left behind."""
    def boom(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        refnet.save(tmp_path / "m.npz", refnet.MLP.init([2, 2], seed=0))
    assert list(tmp_path.iterdir()) == []
