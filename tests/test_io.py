"""Safe persistence: exact round trips, and clear errors for bad files.

Round trip, for every registered estimator (the Miras family too where it
exists), both dtypes, fitted and unfitted: same class, hyper-parameters and
learned attributes bit for bit, same predictions, same continuation of the
stream. One test each for truncated, corrupted, wrong-version, unknown-class
and pickle-bearing files; callable hyper-parameters cannot be saved.
"""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest

from ttrlearn import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    RLSMemory,
)
from ttrlearn import io as tio
from ttrlearn.io import FormatError, load, save


def _estimators():
    out = [
        LinearAttentionMemory(),
        LinearAttentionMemory(feature_map="elu+1", normalize=True, decay=0.9),
        RLSMemory(alpha=0.1, forgetting_factor=0.95),
        RLSMemory(ridge_mode="fixed", stabilize=0.5, forgetting_factor=0.9),
        KernelRegressionMemory(max_memory=7, order=1),
        KernelRegressionMemory(kernel="laplacian", normalize_qk=True, decay=0.8),
        GatedDeltaMemory(decay=0.9),
        GatedDeltaMemory(step="implicit", track_segment_map=True),
    ]
    covered = {type(e).__name__ for e in out}
    # every other registered estimator (e.g. the Miras family) with defaults
    for name, cls in sorted(tio.registry().items()):
        if name not in covered:
            out.append(cls())
    return out


ESTIMATORS = _estimators()


def _assert_identical(a, b):
    assert type(a) is type(b)
    assert a.get_params() == b.get_params()
    da = {k: v for k, v in a.__dict__.items() if k.endswith("_")}
    db = {k: v for k, v in b.__dict__.items() if k.endswith("_")}
    assert da.keys() == db.keys()
    for k, v in da.items():
        w = db[k]
        assert type(v) is type(w), k
        if isinstance(v, np.ndarray):
            assert v.dtype == w.dtype and v.shape == w.shape, k
            assert v.tobytes() == w.tobytes(), k
        else:
            assert v == w, k


def _stream(n=23, d_k=4, d_v=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d_k)), rng.normal(size=(n, d_v))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: repr(e)[:60])
def test_round_trip_is_exact(est, dtype, tmp_path):
    est = est.set_params(dtype=dtype)
    K, V = _stream()
    est.fit(K[:15], V[:15])
    path = save(est, tmp_path / "m.npz")
    got = load(path)
    _assert_identical(est, got)
    Q = np.random.default_rng(1).normal(size=(5, 4))
    assert np.array_equal(got.predict(Q), est.predict(Q))
    # the loaded memory continues the stream exactly like the original
    O1 = got.partial_fit_predict(K[15:], V[15:])
    O2 = est.partial_fit_predict(K[15:], V[15:])
    assert np.array_equal(O1, O2)
    assert np.array_equal(got.predict(Q), est.predict(Q))
    for name in ("coef_", "keys_", "values_", "log_weights_", "n_seen_"):
        if hasattr(est, name) and not callable(getattr(est, name)):
            try:
                want = getattr(est, name)
            except AttributeError:
                continue
            assert np.array_equal(getattr(got, name), want), name


@pytest.mark.parametrize("est", ESTIMATORS[:4], ids=lambda e: repr(e)[:60])
def test_round_trip_unfitted_and_one_dimensional(est, tmp_path):
    _assert_identical(est, load(save(est, tmp_path / "u.npz")))
    K, V = _stream(d_v=1)
    est.fit(K, V[:, 0])
    got = load(save(est, tmp_path / "f.npz"))
    assert got.predict(K).shape == (K.shape[0],)
    assert np.array_equal(got.predict(K), est.predict(K))


def test_feature_names_and_type_valued_params_round_trip(tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas gives feature names")
    K, V = _stream()
    X = pd.DataFrame(K, columns=["a", "b", "c", "d"])
    est = RLSMemory(dtype=np.float32).fit(X, V)
    got = load(save(est, tmp_path / "m.npz"))
    _assert_identical(est, got)
    assert got.dtype is np.float32
    assert list(got.feature_names_in_) == ["a", "b", "c", "d"]


def test_file_is_a_plain_npz_with_a_json_header(tmp_path):
    K, V = _stream()
    path = save(RLSMemory().fit(K, V), tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        header = json.loads(bytes(npz["header.json"]).decode())
        arrays = {n: npz[n] for n in npz.files if n != "header.json"}
    assert header["format"] == "ttrlearn.memory"
    assert header["format_version"] == tio.FORMAT_VERSION
    assert header["class"] == "RLSMemory"
    assert header["params"]["alpha"] == 1.0
    assert {"coef_", "gram_", "moment_"} <= set(header["arrays"])
    assert all(a.dtype.kind in "biufU" for a in arrays.values())


def test_callable_hyper_parameters_cannot_be_saved(tmp_path):
    K, V = _stream()
    est = LinearAttentionMemory(feature_map=np.tanh).fit(K, V)
    with pytest.raises(TypeError, match=r"'feature_map'.*callable"):
        save(est, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_save_replaces_atomically(tmp_path):
    K, V = _stream()
    path = tmp_path / "m.npz"
    save(RLSMemory().fit(K, V), path)
    save(RLSMemory(alpha=3.0).fit(K, V), path)
    assert load(path).alpha == 3.0
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


# ----------------------------------------------------------- bad files
def _saved(tmp_path):
    K, V = _stream()
    return save(RLSMemory(forgetting_factor=0.9).fit(K, V), tmp_path / "m.npz")


def _rewrite(path, header=None, extra=None):
    """Rewrite a memory file with a modified header and/or extra members."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    h = json.loads(members["header.json"])
    if header is not None:
        header(h)
    members["header.json"] = json.dumps(h).encode()
    members.update(extra or {})
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return path


def test_truncated_file_raises(tmp_path):
    path = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated or corrupted"):
        load(path)


def test_corrupted_file_raises(tmp_path):
    path = _saved(tmp_path)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(
            json.loads(zf.read("header.json"))["arrays"]["coef_"]["member"]
        )
    data = bytearray(path.read_bytes())
    # flip a byte inside the stored array data (after the local header)
    at = info.header_offset + 30 + len(info.filename) + info.compress_size - 3
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="corrupted"):
        load(path)


def test_wrong_version_raises(tmp_path):
    path = _rewrite(_saved(tmp_path), header=lambda h: h.update(format_version=99))
    with pytest.raises(FormatError, match="unsupported format version 99"):
        load(path)


def test_unknown_class_raises(tmp_path):
    path = _rewrite(_saved(tmp_path), header=lambda h: h.update({"class": "Popen"}))
    with pytest.raises(FormatError, match="unknown estimator class 'Popen'"):
        load(path)


class _Boom:
    def __reduce__(self):  # would run on unpickling
        return (pytest.fail, ("load unpickled the file",))


def test_pickle_bearing_file_raises(tmp_path):
    path = _saved(tmp_path)
    arr = np.empty(1, dtype=object)
    arr[0] = _Boom()
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=True)
    data = buf.getvalue()
    member = json.loads(zipfile.ZipFile(path).read("header.json"))["arrays"]["coef_"]

    def point_coef_at_pickle(h):
        import hashlib

        h["arrays"]["coef_"]["sha256"] = hashlib.sha256(data).hexdigest()

    _rewrite(path, header=point_coef_at_pickle, extra={member["member"]: data})
    with pytest.raises(FormatError, match="pickled Python objects"):
        load(path)


def test_a_pickle_file_is_refused(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(pickle.dumps(RLSMemory()))
    with pytest.raises(FormatError, match=r"pickle file.*never unpickles"):
        load(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda h: h.update(format="other"), "not a ttrlearn memory file"),
        (lambda h: h["params"].update(alpha=-1.0), "invalid hyper-parameters"),
        (lambda h: h["params"].update(alpha={"__call__": "os.system"}), "unsupported"),
        (lambda h: h["state"].update(predict="x"), "invalid learned attribute name"),
        (lambda h: h["state"].update(_dtype_="x"), "would shadow"),
        (lambda h: h["state"].update(n_features_in_=7), "inconsistent"),
    ],
    ids=["format", "bad-param", "encoded-object", "name", "shadow", "inconsistent"],
)
def test_tampered_headers_raise(tmp_path, edit, match):
    path = _rewrite(_saved(tmp_path), header=edit)
    with pytest.raises(FormatError, match=match):
        load(path)


def test_unexpected_members_raise(tmp_path):
    path = _rewrite(_saved(tmp_path), extra={"payload.pkl": pickle.dumps(1)})
    with pytest.raises(FormatError, match="unexpected members"):
        load(path)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")


def test_registry_holds_the_package_estimators():
    names = set(tio.registry())
    assert {
        "GatedDeltaMemory",
        "KernelRegressionMemory",
        "LinearAttentionMemory",
        "RLSMemory",
    } <= names
    try:
        import ttrlearn.memories.miras as miras
    except ImportError:
        return
    from ttrlearn import BaseMemory

    public = {
        n
        for n in miras.__all__
        if isinstance(getattr(miras, n), type)
        and issubclass(getattr(miras, n), BaseMemory)
    }
    assert public and public <= names
