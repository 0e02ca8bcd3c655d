"""Safe persistence: ``save(memory, path)`` / ``load(path)``.

A memory file is a ``.npz`` archive (readable by :func:`numpy.load`) holding
``header.json`` (format name and version, the estimator's class name, its
hyper-parameters, its scalar state and an index of the arrays with their
SHA-256 digests) and one ``.npy`` member per learned array, written and read
with ``allow_pickle=False``.

Loading never executes code from the file: the class is looked up by name in
ttrlearn's own registry of estimators (never imported from a name in the
file), hyper-parameters and scalars are plain JSON values, arrays are plain
numeric (or fixed-width string) ``.npy`` data, and every member is checked
against its digest. Anything else is rejected with :class:`FormatError`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io as _io
import json
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ttrlearn._backends import array_module, is_cupy_array, require_device
from ttrlearn._base import BaseMemory

__all__ = ["FORMAT_VERSION", "FormatError", "load", "register", "registry", "save"]

FORMAT = "ttrlearn.memory"
#: the version this ttrlearn writes and reads
FORMAT_VERSION = 1
HEADER = "header.json"
_MAX_HEADER = 64 * 2**20
_NAME = re.compile(r"^_?[A-Za-z][A-Za-z0-9_]*_$")
#: types allowed as values of type-valued hyper-parameters (``dtype``)
_TYPES = {"numpy.float32": np.float32, "numpy.float64": np.float64, "float": float}
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}

_EXTRA: dict = {}


class FormatError(ValueError):
    """A file is not a valid ttrlearn memory file.

    Raised for truncated or corrupted files, unsupported format versions,
    unknown classes, and data that would need unpickling.
    """


# ------------------------------------------------------------------ registry
def register(cls):
    """Allow :func:`load` to create ``cls``; usable as a class decorator.

    For :class:`~ttrlearn.BaseMemory` subclasses defined in your own code.

    Parameters
    ----------
    cls : type
        The estimator class. Its name must not clash with a registered one.

    Returns
    -------
    cls : type
        The class, unchanged.
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseMemory)):
        raise TypeError(f"only BaseMemory subclasses can be registered, got {cls!r}")
    known = registry()
    if cls.__name__ in known and known[cls.__name__] is not cls:
        raise ValueError(f"a different class named {cls.__name__!r} is registered")
    _EXTRA[cls.__name__] = cls
    return cls


def registry():
    """The estimator classes :func:`load` may create, by class name.

    Returns
    -------
    classes : dict of str to type
        The ttrlearn memories (the Miras family too, where
        ``ttrlearn.memories.miras`` exists) and any :func:`register`-ed class.
    """
    out = {}
    modules = [importlib.import_module("ttrlearn.memories")]
    if importlib.util.find_spec("ttrlearn.memories.miras") is not None:
        modules.append(importlib.import_module("ttrlearn.memories.miras"))
    for mod in modules:
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            if isinstance(obj, type) and issubclass(obj, BaseMemory):
                out[obj.__name__] = obj
    out.update(_EXTRA)
    return out


# ------------------------------------------------------------------ encoding
def _encode_value(value, what):
    """A hyper-parameter or scalar state value as plain JSON."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return {"__numpy__": value.dtype.str, "value": value.item()}
    if isinstance(value, type) and value in _TYPE_NAMES:
        return {"__type__": _TYPE_NAMES[value]}
    if isinstance(value, (list, tuple)):
        items = [_encode_value(v, what) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if callable(value):
        raise TypeError(
            f"cannot save {what}: it is a callable ({value!r}). Code cannot be "
            "stored safely; use one of the named options (a string), or save the "
            "arrays yourself and rebuild the estimator with the callable"
        )
    raise TypeError(
        f"cannot save {what} of type {type(value).__name__}: only None, bool, "
        "int, float, str (and lists or tuples of them) can be saved safely"
    )


def _decode_value(obj, what):
    if obj is None or isinstance(obj, (bool, str, int, float)):
        return obj
    if isinstance(obj, list):
        return [_decode_value(v, what) for v in obj]
    if isinstance(obj, dict) and len(obj) == 1 and "__tuple__" in obj:
        items = obj["__tuple__"]
        if isinstance(items, list):
            return tuple(_decode_value(v, what) for v in items)
    if isinstance(obj, dict) and set(obj) == {"__type__"}:
        if obj["__type__"] in _TYPES:
            return _TYPES[obj["__type__"]]
    if isinstance(obj, dict) and set(obj) == {"__numpy__", "value"}:
        try:
            dt = np.dtype(obj["__numpy__"])
        except TypeError:
            dt = None
        if dt is not None and dt.kind in "biuf":
            return dt.type(obj["value"])
    raise FormatError(f"{what} has an unsupported encoded value: {obj!r:.200}")


def _learned(memory):
    """Learned attributes (names ending in ``_``), in a stable order."""
    return {
        k: v
        for k, v in sorted(memory.__dict__.items())
        if k.endswith("_") and not k.startswith("__")
    }


def _npy_bytes(arr):
    buf = _io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ---------------------------------------------------------------------- save
def save(memory, path):
    """Save a memory (fitted or not) to a ``.npz`` file, safely.

    Parameters
    ----------
    memory : BaseMemory
        A ttrlearn memory whose class :func:`load` knows (see
        :func:`registry`).
    path : str or os.PathLike
        Destination, written as given (``.npz`` is the conventional suffix).
        The file is written to a temporary name and moved into place, so an
        interrupted save never leaves a half-written file under ``path``.

    Returns
    -------
    path : pathlib.Path
        The path written.

    Raises
    ------
    TypeError
        A hyper-parameter or learned attribute cannot be stored as plain
        data (for example a callable ``feature_map``, or a ``RandomState``).

    Notes
    -----
    Round trip: ``load(path)`` has the same class, hyper-parameters and
    learned arrays (bit for bit, same dtypes) as ``memory``, so it predicts
    exactly the same and continues the same stream identically. The state of
    a memory fitted with ``backend="cupy"`` is copied to the host for the
    file; :func:`load` puts it back on the device.
    """
    if not isinstance(memory, BaseMemory):
        raise TypeError(f"save expects a ttrlearn memory, got {type(memory).__name__}")
    cls = type(memory)
    if registry().get(cls.__name__) is not cls:
        raise TypeError(
            f"{cls.__name__} is not a registered ttrlearn estimator, so load could "
            "not recreate it; register it with ttrlearn.io.register first"
        )
    from ttrlearn import __version__

    params = {
        k: _encode_value(v, f"hyper-parameter {k!r}")
        for k, v in memory.get_params(deep=False).items()
    }
    state, arrays, members = {}, {}, {}
    for i, (name, value) in enumerate(_learned(memory).items()):
        if is_cupy_array(value):  # device state: the file holds a host copy
            value = value.get()
        if isinstance(value, np.ndarray) or (
            isinstance(value, np.generic) and value.dtype.kind in "biuf"
        ):
            arr = np.asarray(value)
            kind = "scalar" if isinstance(value, np.generic) else "array"
            if arr.dtype.kind == "O":
                if not all(isinstance(x, str) for x in arr.ravel()):
                    raise TypeError(
                        f"cannot save learned attribute {name!r}: an object array "
                        "that is not all strings"
                    )
                arr, kind = arr.astype(str), "str_object"
            elif arr.dtype.kind not in "biufU":
                raise TypeError(
                    f"cannot save learned attribute {name!r} of dtype {arr.dtype}"
                )
            data = _npy_bytes(np.ascontiguousarray(arr))
            member = f"arrays/{i}.npy"
            members[member] = data
            arrays[name] = {
                "member": member,
                "kind": kind,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        else:
            state[name] = _encode_value(value, f"learned attribute {name!r}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ttrlearn_version": __version__,
        "class": cls.__name__,
        "params": params,
        "state": state,
        "arrays": arrays,
    }
    text = json.dumps(header, allow_nan=True, indent=1, sort_keys=True)
    path = Path(os.fspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w") as zf:
            zf.writestr(HEADER, text.encode("utf-8"))
            for member, data in members.items():
                zf.writestr(member, data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# ---------------------------------------------------------------------- load
def _fail(path, msg):
    return FormatError(f"{os.fspath(path)}: {msg}")


def _read_member(zf, member, path):
    try:
        return zf.read(member)
    except KeyError:
        raise _fail(path, f"member {member!r} is missing (truncated file?)") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise _fail(
            path, f"member {member!r} is corrupted or truncated ({exc})"
        ) from None
    except Exception as exc:  # zlib.error and friends from a damaged stream
        raise _fail(path, f"member {member!r} cannot be read ({exc})") from None


def _open(path):
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic[:1] == b"\x80":
            raise _fail(
                path,
                "this is a pickle file, not a ttrlearn memory file; "
                "ttrlearn.io.load never unpickles (use pickle only on files "
                "you trust)",
            ) from None
        raise _fail(
            path,
            f"not a ttrlearn memory file: not a valid .npz (zip) archive, "
            f"possibly truncated or corrupted ({exc})",
        ) from None


def _header(zf, path):
    names = set(zf.namelist())
    if HEADER not in names:
        raise _fail(
            path, f"no {HEADER} member: not a ttrlearn memory file (a plain .npz?)"
        )
    if zf.getinfo(HEADER).file_size > _MAX_HEADER:
        raise _fail(path, f"{HEADER} is implausibly large")
    raw = _read_member(zf, HEADER, path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"{HEADER} is not valid JSON (corrupted?): {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _fail(path, f"not a ttrlearn memory file (format is not {FORMAT!r})")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _fail(path, f"format_version {version!r} is not an integer")
    if version != FORMAT_VERSION:
        newer = " (written by a newer ttrlearn; upgrade)" if version > 1 else ""
        raise _fail(
            path,
            f"unsupported format version {version}{newer}; this ttrlearn reads "
            f"version {FORMAT_VERSION}",
        )
    for key, typ in (("class", str), ("params", dict), ("state", dict)):
        if not isinstance(header.get(key), typ):
            raise _fail(path, f"header field {key!r} is missing or malformed")
    if not isinstance(header.get("arrays"), dict):
        raise _fail(path, "header field 'arrays' is missing or malformed")
    return header


def _check_name(cls, name, path):
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith("__"):
        raise _fail(path, f"invalid learned attribute name {name!r}")
    if hasattr(cls, name):
        raise _fail(
            path, f"learned attribute {name!r} would shadow a {cls.__name__} member"
        )


def _read_array(zf, name, spec, path):
    if not isinstance(spec, dict) or not {"member", "kind", "sha256"} <= set(spec):
        raise _fail(path, f"array index entry for {name!r} is malformed")
    data = _read_member(zf, spec["member"], path)
    if hashlib.sha256(data).hexdigest() != spec["sha256"]:
        raise _fail(path, f"array {name!r} fails its SHA-256 check (corrupted file)")
    try:
        arr = np.lib.format.read_array(_io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
            raise _fail(
                path,
                f"array {name!r} holds pickled Python objects; ttrlearn files "
                "never do and load refuses to unpickle",
            ) from None
        raise _fail(path, f"array {name!r} is not a valid .npy ({exc})") from None
    except Exception as exc:
        raise _fail(path, f"array {name!r} is not a valid .npy ({exc})") from None
    kind = spec["kind"]
    if arr.dtype.kind not in "biufU" or (arr.dtype.kind == "U") != (
        kind == "str_object"
    ):
        raise _fail(path, f"array {name!r} has an unexpected dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise _fail(path, f"array {name!r} holds NaN or infinity")
    if kind == "array":
        return arr
    if kind == "scalar":
        if arr.ndim != 0:
            raise _fail(path, f"scalar {name!r} is stored with shape {arr.shape}")
        return arr[()]
    if kind == "str_object":
        return arr.astype(object)
    raise _fail(path, f"array {name!r} has unknown kind {kind!r}")


def load(path):
    """Load a memory saved by :func:`save`, without executing any code.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save`.

    Returns
    -------
    memory : BaseMemory
        A new estimator of the saved class with the saved hyper-parameters and
        learned state: it predicts exactly as the saved one and can continue
        its stream.

    Raises
    ------
    FormatError
        The file is truncated or corrupted (zip CRC or SHA-256 mismatch),
        not a ttrlearn memory file, of an unsupported format version, names a
        class that is not a registered ttrlearn estimator, carries pickled
        objects or invalid hyper-parameters, or its state is inconsistent.
    FileNotFoundError
        No file at ``path``.
    ImportError
        The memory was fitted with ``backend="cupy"`` and CuPy is not
        installed (``pip install ttrlearn[gpu]``).
    RuntimeError
        The memory was fitted with ``backend="cupy"`` and no CUDA device or
        driver is usable.

    Notes
    -----
    A memory fitted with ``backend="cupy"`` is restored with its arrays on
    the current CUDA device, where such a memory keeps its state.
    """
    with _open(path) as zf:
        header = _header(zf, path)
        known = registry()
        cls = known.get(header["class"])
        if cls is None:
            raise _fail(
                path,
                f"unknown estimator class {header['class']!r:.100}; load only creates "
                f"ttrlearn's own estimators ({', '.join(sorted(known))}) or "
                "classes registered with ttrlearn.io.register",
            )
        expected = {HEADER} | {
            s.get("member") for s in header["arrays"].values() if isinstance(s, dict)
        }
        extra = sorted(set(zf.namelist()) - expected)
        if extra:
            raise _fail(path, f"unexpected members {extra[:5]} (tampered file?)")
        params = {
            k: _decode_value(v, f"hyper-parameter {k!r}")
            for k, v in header["params"].items()
        }
        try:
            memory = cls(**params)
            memory._validate_params()
        except Exception as exc:
            raise _fail(
                path, f"invalid hyper-parameters for {cls.__name__}: {exc}"
            ) from None
        learned = {}
        for name, value in header["state"].items():
            _check_name(cls, name, path)
            learned[name] = _decode_value(value, f"learned attribute {name!r}")
        for name, spec in header["arrays"].items():
            _check_name(cls, name, path)
            if name in learned:
                raise _fail(path, f"learned attribute {name!r} is stored twice")
            learned[name] = _read_array(zf, name, spec, path)
    if learned.get("backend_") == "cupy":  # the state goes back to the device
        cupy = require_device()
        learned = {
            k: cupy.asarray(v)
            if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"
            else v
            for k, v in learned.items()
        }
    for name, value in learned.items():
        setattr(memory, name, value)
    _check_consistent(memory, path)
    return memory


def _check_consistent(memory, path):
    """A fitted memory must at least predict from its state."""
    if not memory.__sklearn_is_fitted__():
        return
    d = getattr(memory, "n_features_in_", None)
    if not isinstance(d, int) or d < 1:
        raise _fail(path, f"n_features_in_ is {d!r}, not a positive integer")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "X has no feature names"
            xp = array_module(*_learned(memory).values())  # host or device
            out = memory.predict(xp.zeros((1, d), dtype=memory._dtype_))
    except Exception as exc:
        raise _fail(
            path, f"the stored state is inconsistent ({type(exc).__name__}: {exc})"
        ) from None
    if not np.isfinite(out).all():
        raise _fail(path, "the stored state predicts non-finite values")
