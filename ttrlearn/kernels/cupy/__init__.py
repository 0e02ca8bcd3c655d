"""CuPy kernels: the numpy kernels' functions on device arrays.

Each module mirrors ``ttrlearn.kernels.numpy.<family>`` (same ``__all__``,
names and signatures) and computes the same mathematics, with the raw CUDA
kernels of :mod:`ttrlearn.gpu` for the hot paths and CuPy's GEMM, Cholesky and
triangular solves for the rest. CuPy is imported lazily: the array module is
taken from the inputs (``get_array_module`` style), so importing these modules
never imports CuPy and, with host-shim modules registered through
:func:`ttrlearn.kernels.cupy._common.register_host_modules`, they also run on
NumPy arrays.
"""

from __future__ import annotations
