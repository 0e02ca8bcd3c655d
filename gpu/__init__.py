"""CuPy raw-kernel backend (installed as :mod:`ttrlearn.gpu`).

CUDA C sources (``*.cu``, shipped in the wheel) and thin launchers taking CuPy
arrays. Importing this package does not import CuPy; the first launch does
(``ImportError`` naming ``pip install ttrlearn[gpu]`` where it is missing,
``RuntimeError`` where no CUDA device or driver is usable). See README.md in
this folder for what is verified and how.
"""

from __future__ import annotations

from ttrlearn.gpu._loader import get_module, gpu_available, load_source
from ttrlearn.gpu.gated_delta import gated_delta_chunk, gated_delta_recurrent
from ttrlearn.gpu.kernel_regression import (
    kernel_regression_recall,
    local_linear_moments,
    local_linear_solve,
)
from ttrlearn.gpu.linear_attention import linear_attention_chunk
from ttrlearn.gpu.rls import rls_masked_combine

__all__ = [
    "gated_delta_chunk",
    "gated_delta_recurrent",
    "get_module",
    "gpu_available",
    "kernel_regression_recall",
    "linear_attention_chunk",
    "load_source",
    "local_linear_moments",
    "local_linear_solve",
    "rls_masked_combine",
]
