"""Backend resolution: ``'auto' | 'numpy' | 'numba' | 'cupy'``.

The estimator layer asks :func:`resolve_backend` once, on the first
``partial_fit``, and then :func:`get_kernels` for the module implementing a
memory family on that backend. Kernels on every backend share function names
and signatures; a numba module that does not (yet) define a function falls
back to the numpy one.
"""

from __future__ import annotations

import importlib
from types import ModuleType, SimpleNamespace

__all__ = [
    "array_module",
    "available_backends",
    "get_kernels",
    "is_cupy_array",
    "require_device",
    "resolve_backend",
]

BACKENDS = ("auto", "numpy", "numba", "cupy")
#: Estimators with a CuPy backend (kernel families under ttrlearn/kernels/cupy).
CUPY_MEMORIES = (
    "LinearAttentionMemory",
    "RLSMemory",
    "GatedDeltaMemory",
    "KernelRegressionMemory",
)
GPU_HINT = "pip install ttrlearn[gpu]  (or ttrlearn[gpu-cuda12] for CUDA 12)"


def is_cupy_array(x) -> bool:
    """True when ``x`` is a CuPy array (checked without importing CuPy)."""
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(*arrays):
    """``cupy`` when any of ``arrays`` is a CuPy array, else ``numpy``.

    Lets estimator code allocate next to its state (``array_module(state).
    empty(...)``) without importing CuPy on the host path.
    """
    if any(is_cupy_array(a) for a in arrays):
        return importlib.import_module("cupy")
    return importlib.import_module("numpy")


def _numba_available() -> bool:
    try:
        importlib.import_module("numba")
    except ImportError:  # pragma: no cover - numba is a hard dependency
        return False
    return True


def _require_cupy():
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as exc:
        raise ImportError(
            "backend='cupy' needs CuPy, which is not installed. Install it with: "
            + GPU_HINT
        ) from exc
    return cupy


def require_device():
    """Import CuPy and check that a CUDA device and driver are usable.

    Raises ``ImportError`` naming ``pip install ttrlearn[gpu]`` without CuPy
    and ``RuntimeError`` where no device or driver is usable. Returns the
    ``cupy`` module.
    """
    cupy = _require_cupy()
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(
            "backend='cupy': CuPy is installed but no CUDA device or driver is "
            f"usable ({type(exc).__name__}: {exc}). Use backend='numpy' or "
            "'numba' with host arrays."
        ) from exc
    if n < 1:
        raise RuntimeError(
            "backend='cupy': CuPy is installed but no CUDA device is visible. "
            "Use backend='numpy' or 'numba' with host arrays."
        )
    return cupy


def available_backends() -> list[str]:
    """List the backends usable in this process.

    Returns
    -------
    backends : list of str
        Usable backends, in order of preference for NumPy input (``"cupy"``
        only where CuPy imports and a CUDA device is available).
    """
    out = ["numpy"]
    if _numba_available():
        out.insert(0, "numba")
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.is_available():
            out.append("cupy")
    except Exception:
        pass
    return out


def resolve_backend(name: str, *arrays) -> str:
    """Resolve ``name`` against the array types of ``arrays``.

    ``'auto'`` follows the data: CuPy input gives ``'cupy'``, NumPy input gives
    ``'numba'``. Data is never moved between host and device: an explicit host
    backend with CuPy input, ``'cupy'`` with host input, or a mix of the two
    raises ``ValueError``. ``'cupy'`` raises ``ImportError`` (naming
    ``pip install ttrlearn[gpu]``) without CuPy and ``RuntimeError`` without a
    usable device or driver.
    """
    on_device = any(is_cupy_array(a) for a in arrays if a is not None)
    if name == "auto":
        if on_device:
            name = "cupy"
        else:
            name = "numba" if _numba_available() else "numpy"
    if name == "cupy":
        require_device()
        host = [
            type(a).__name__ for a in arrays if a is not None and not is_cupy_array(a)
        ]
        if host or not arrays:
            raise ValueError(
                "backend='cupy' keeps data on the GPU and takes CuPy arrays; got "
                f"{', '.join(host) or 'no arrays'}. Move the data explicitly "
                "(cupy.asarray(X)) or use backend='numpy' / 'numba'."
            )
        return name
    if on_device:
        raise ValueError(
            f"backend={name!r} got a cupy.ndarray; pass host arrays (X.get()) or "
            "use backend='cupy'. Data is never moved between device and host "
            "silently."
        )
    if name not in ("numpy", "numba"):
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name


_CACHE: dict[tuple[str, str], SimpleNamespace] = {}


def get_kernels(backend: str, family: str) -> SimpleNamespace:
    """Namespace of kernel functions for ``family`` on ``backend``.

    Every public function of ``ttrlearn.kernels.numpy.<family>`` is present;
    on ``backend='numba'`` the numba implementation replaces it where one
    exists; on ``backend='cupy'`` all of them come from
    ``ttrlearn.kernels.cupy.<family>`` (``NotImplementedError`` naming the
    supported memories where that module does not exist).
    """
    key = (backend, family)
    ns = _CACHE.get(key)
    if ns is not None:
        return ns
    base: ModuleType = importlib.import_module(f"ttrlearn.kernels.numpy.{family}")
    names = base.__all__
    funcs = {n: getattr(base, n) for n in names}
    if backend == "cupy":
        try:
            dev = importlib.import_module(f"ttrlearn.kernels.cupy.{family}")
        except ModuleNotFoundError:
            raise NotImplementedError(
                f"backend='cupy' is not implemented for the {family!r} memories; "
                f"it is available for {', '.join(CUPY_MEMORIES)}. Use "
                "backend='numpy' or 'numba' with host arrays."
            ) from None
        missing = [n for n in names if n not in getattr(dev, "__all__", ())]
        if missing:  # pragma: no cover - guarded by the tests
            raise NotImplementedError(f"cupy kernels for {family!r} lack {missing}")
        funcs = {n: getattr(dev, n) for n in names}
    elif backend == "numba":
        try:
            fast = importlib.import_module(f"ttrlearn.kernels.numba.{family}")
        except ModuleNotFoundError:
            fast = None
        if fast is not None:
            for n in getattr(fast, "__all__", ()):
                funcs[n] = getattr(fast, n)
    ns = SimpleNamespace(**funcs)
    _CACHE[key] = ns
    return ns
