"""A fake ``cupy`` for the CPU: NumPy underneath, CuPy's rules on top.

Put on ``sys.path`` only by the ``fake_cupy`` fixture of
``tests/gpu/test_cupy_backend.py``; never importable otherwise. What it models:

* ``cupy.ndarray`` is **not** a NumPy array (as in CuPy): it wraps one, its
  ``type(x).__module__`` is ``"cupy"``, and it implicitly converts to nothing.
  ``__array__`` (hence ``np.asarray(x)``, ``np.array(x)``, assigning it into a
  NumPy array) raises CuPy's ``TypeError`` and is counted in
  ``cupy._fake.counts["implicit"]``. The only ways to the host are ``x.get()``
  and ``cupy.asnumpy(x)``, counted in ``counts["get"]``; scalar syncs
  (``bool``, ``float``, ``int``, ``item``, formatting) in ``counts["sync"]``,
  host -> device copies in ``counts["h2d"]``.
* NumPy functions and ufuncs on it dispatch like CuPy's
  ``__array_function__`` / ``__array_ufunc__``: only names that CuPy 14.2 has
  (``_names.txt``, ``_linalg_names.txt``, listed from the real wheel) work,
  and host NumPy arrays mixed into them raise CuPy's ``TypeError``
  ("Unsupported type") instead of being converted.
* Methods follow CuPy 14.2's signatures (``max(axis, out, keepdims)`` has no
  ``initial``, for instance); other methods do not exist.
* Reductions return 0-d arrays, not NumPy scalars, as CuPy does.
* ``cupy.linalg.cholesky`` does not raise on a matrix that is not positive
  definite (CuPy's default ``linalg='ignore'``): the factor holds NaN.
* ``RawModule(code=..., options=...)`` writes the code it is given (the
  loader's inlined text) to a file and builds it with g++ through the host
  shim (tests/gpu/shim); ``get_function(name)(grid, block, args,
  shared_mem=0)`` runs it on the wrapped buffers, checking the arguments
  against the C signature. Host NumPy arrays as kernel arguments raise.
* ``cupy.cuda.runtime.getDeviceCount()`` returns ``_fake.device_count`` (1),
  or raises ``CUDARuntimeError`` when ``_fake.driver_error`` is set.
"""

from __future__ import annotations

import hashlib
import os
import types
from pathlib import Path

import numpy as _np
from numpy.lib.mixins import NDArrayOperatorsMixin

__version__ = "14.2.0+fake"
_HERE = Path(__file__).resolve().parent
_NAMES = frozenset(_HERE.joinpath("_names.txt").read_text().split())
_LINALG_NAMES = frozenset(_HERE.joinpath("_linalg_names.txt").read_text().split())


class _Fake(types.SimpleNamespace):
    """Counters and device switches of the fake (``cupy._fake``)."""

    def reset(self):
        self.counts = dict(get=0, implicit=0, sync=0, h2d=0, launches=0)


_fake = _Fake(device_count=1, driver_error=None, modules={})
_fake.reset()

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` "
    "to construct a NumPy array explicitly."
)


# ----------------------------------------------------------------- wrapping
def _unwrap(x, host_ok=False):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        if host_ok:
            _fake.counts["h2d"] += 1
            return x
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(i, host_ok) for i in x)
    if isinstance(x, dict):
        return {k: _unwrap(v, host_ok) for k, v in x.items()}
    return x


def _wrap(r):
    if isinstance(r, _np.ndarray):
        return ndarray._from(r)
    if isinstance(r, _np.generic):
        return ndarray._from(_np.asarray(r))
    if isinstance(r, tuple):
        return tuple(_wrap(i) for i in r)
    if isinstance(r, list):
        return [_wrap(i) for i in r]
    return r


def _sync(x):
    _fake.counts["sync"] += 1
    return x._a


class ndarray(NDArrayOperatorsMixin):
    """Device array stand-in (wraps a NumPy array; see the module docstring)."""

    __slots__ = ("_a",)
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _from(cls, a):
        obj = object.__new__(cls)
        obj._a = a
        return obj

    # -- conversions: none implicit
    def __array__(self, dtype=None, copy=None):
        _fake.counts["implicit"] += 1
        raise TypeError(_IMPLICIT)

    def get(self, stream=None, order="C", out=None, blocking=True):
        _fake.counts["get"] += 1
        return _np.array(self._a, order=order, copy=True)

    def __bool__(self):
        return bool(_sync(self))

    def __float__(self):
        return float(_sync(self))

    def __int__(self):
        return int(_sync(self))

    def __index__(self):
        return _sync(self).__index__()

    def __complex__(self):
        return complex(_sync(self))

    def item(self):
        return _sync(self).item()

    def __format__(self, spec):
        return format(_sync(self), spec)

    def __repr__(self):
        return "fake-" + repr(_sync(self))

    __str__ = __repr__

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __len__(self):
        return len(self._a)

    # -- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    real = property(lambda self: _wrap(self._a.real))
    device = property(lambda self: cuda.Device(0))

    # -- indexing
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key, host_ok=True)])

    def __setitem__(self, key, value):
        self._a[_unwrap(key, host_ok=True)] = _unwrap(value, host_ok=True)

    # -- NumPy protocols, dispatching as CuPy does
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc.__name__ not in _NAMES:
            return NotImplemented
        if method not in ("__call__", "reduce", "accumulate", "outer"):
            return NotImplemented
        out = kwargs.get("out")
        r = getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs))
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(r)

    def __array_function__(self, func, types, args, kwargs):
        mod = getattr(func, "__module__", None)
        if mod == "numpy.linalg":
            impl = getattr(linalg, func.__name__, None)
        elif mod == "numpy":
            impl = getattr(_this(), func.__name__, None)
        else:
            impl = None
        if impl is None:  # CuPy has no such function: NumPy raises TypeError
            return NotImplemented
        return impl(*args, **kwargs)

    # -- methods with CuPy 14.2's signatures
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        kw = {} if casting is None else {"casting": casting}
        return _wrap(self._a.astype(dtype, order=order, copy=copy, **kw))

    def reshape(self, *shape, order="C", copy=None):
        return _wrap(self._a.reshape(*shape, order=order))

    def _red(name):
        def f(self, axis=None, out=None, keepdims=False):
            r = getattr(self._a, name)(axis=axis, out=_unwrap(out), keepdims=keepdims)
            return out if out is not None else _wrap(r)

        f.__name__ = name
        return f

    max = _red("max")
    min = _red("min")
    all = _red("all")
    any = _red("any")

    def _dred(name):
        def f(self, axis=None, dtype=None, out=None, keepdims=False):
            r = getattr(self._a, name)(
                axis=axis, dtype=dtype, out=_unwrap(out), keepdims=keepdims
            )
            return out if out is not None else _wrap(r)

        f.__name__ = name
        return f

    sum = _dred("sum")
    mean = _dred("mean")
    prod = _dred("prod")
    del _red, _dred

    def argmax(self, axis=None, out=None, dtype=None, keepdims=False):
        return _wrap(self._a.argmax(axis=axis, keepdims=keepdims))

    def argmin(self, axis=None, out=None, dtype=None, keepdims=False):
        return _wrap(self._a.argmin(axis=axis, keepdims=keepdims))

    def cumsum(self, axis=None, dtype=None, out=None):
        return _wrap(self._a.cumsum(axis=axis, dtype=dtype))

    def copy(self, order="C"):
        return _wrap(self._a.copy(order=order))

    def transpose(self, *axes):
        return _wrap(self._a.transpose(*axes))

    def swapaxes(self, axis1, axis2):
        return _wrap(self._a.swapaxes(axis1, axis2))

    def diagonal(self, offset=0, axis1=0, axis2=1):
        return _wrap(self._a.diagonal(offset, axis1, axis2))

    def ravel(self, order="C"):
        return _wrap(self._a.ravel(order))

    def flatten(self, order="C"):
        return _wrap(self._a.flatten(order))

    def squeeze(self, axis=None):
        return _wrap(self._a.squeeze(axis))

    def clip(self, min=None, max=None, out=None):
        return _wrap(self._a.clip(min, max))

    def fill(self, value):
        self._a.fill(value)

    def dot(self, b, out=None):
        return _wrap(self._a.dot(_unwrap(b)))

    def nonzero(self):
        return _wrap(self._a.nonzero())

    def view(self, dtype=None, type=None):
        return _wrap(self._a.view(dtype) if dtype is not None else self._a.view())

    def conj(self):
        return _wrap(self._a.conj())


# ---------------------------------------------------------- module functions
def _function(name, impl):
    def f(*args, **kwargs):
        return _wrap(impl(*_unwrap(args), **_unwrap(kwargs)))

    f.__name__ = f.__qualname__ = name
    return f


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")
    obj = getattr(_np, name)
    if isinstance(obj, type) or not callable(obj):
        return obj  # dtypes, constants
    f = _function(name, obj)
    globals()[name] = f
    return f


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype, copy=False)
    if isinstance(a, _np.ndarray):
        _fake.counts["h2d"] += 1
    return _wrap(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(
    obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False
):
    if isinstance(obj, ndarray):
        return _wrap(
            _np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin)
        )
    if isinstance(obj, _np.ndarray):
        _fake.counts["h2d"] += 1
    return _wrap(_np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order)
    return _np.asarray(a, order=order)


def _this():
    import sys

    return sys.modules[__name__]


def get_array_module(*args):
    return _this() if any(isinstance(a, ndarray) for a in args) else _np


# ------------------------------------------------------------------- linalg
linalg = types.ModuleType("cupy.linalg")
for _n in _LINALG_NAMES:
    _impl = getattr(_np.linalg, _n, None)
    if callable(_impl) and not isinstance(_impl, type):
        setattr(linalg, _n, _function(_n, _impl))
linalg.LinAlgError = _np.linalg.LinAlgError


def _cholesky(a):
    """CuPy's default (``linalg='ignore'``): no exception, a NaN factor."""
    x = _unwrap(a)
    try:
        return _wrap(_np.linalg.cholesky(x))
    except _np.linalg.LinAlgError:
        return _wrap(_np.full(x.shape, _np.nan, dtype=x.dtype))


linalg.cholesky = _cholesky


# --------------------------------------------------------------------- cuda
class CUDARuntimeError(RuntimeError):
    """Stand-in of ``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""


def _device_count():
    if _fake.driver_error is not None:
        raise CUDARuntimeError(_fake.driver_error)
    return _fake.device_count


class _Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


cuda = types.ModuleType("cupy.cuda")
cuda.runtime = types.SimpleNamespace(
    getDeviceCount=_device_count,
    getDevice=lambda: 0,
    CUDARuntimeError=CUDARuntimeError,
    runtimeGetVersion=lambda: 13020,
)
cuda.nvrtc = types.SimpleNamespace(getVersion=lambda: (13, 0))
cuda.Device = _Device


def _is_available():
    try:
        return _device_count() > 0
    except Exception:
        return False


cuda.is_available = _is_available


# ---------------------------------------------------------------- RawModule
class _Kernel:
    def __init__(self, host_kernel):
        self._k = host_kernel

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        for i, a in enumerate(args):
            if isinstance(a, _np.ndarray):
                raise TypeError(
                    f"RawKernel argument {i}: host numpy.ndarray passed to a kernel"
                )
        _fake.counts["launches"] += 1
        self._k(grid, block, _unwrap(tuple(args)), shared_mem=shared_mem)


class RawModule:
    """``cupy.RawModule`` compiled by g++ through the host shim."""

    def __init__(
        self,
        code=None,
        path=None,
        options=(),
        backend="nvrtc",
        translate_cucomplex=False,
        *,
        enable_cooperative_groups=False,
        name_expressions=None,
        jitify=False,
    ):
        if code is None:
            code = Path(path).read_text()
        self.code, self.options = code, tuple(options)
        self.name_expressions = name_expressions
        key = hashlib.sha256(code.encode()).hexdigest()[:16]
        mod = _fake.modules.get(key)
        if mod is None:
            from tests.gpu.shim.host import BUILD_ROOT, HostModule

            root = Path(os.environ.get("TTR_SHIM_BUILD_DIR", BUILD_ROOT))
            src = root / f"fakecupy-src-{key}" / "module.cu"
            if not src.exists():
                src.parent.mkdir(parents=True, exist_ok=True)
                tmp = src.with_name(f"module.{os.getpid()}.tmp")
                tmp.write_text(code)
                os.replace(tmp, src)
            mod = HostModule(src)
            _fake.modules[key] = mod
        self._mod = mod

    def get_function(self, name):
        return _Kernel(self._mod.get_function(name))
