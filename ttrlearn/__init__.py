"""ttrlearn: online regression memories as scikit-learn estimators.

Storing key-value pairs in an associative memory is regression at test time:
``partial_fit(K, V)`` absorbs pairs in order, ``predict(Q)`` recalls. Every
memory equals a stated batch solver (see :mod:`ttrlearn.reference`) on every
prefix of the stream, whatever the chunking, on every backend.
"""

from __future__ import annotations

from ttrlearn._backends import available_backends
from ttrlearn._base import BaseMemory
from ttrlearn.exceptions import DivergenceWarning, NonFiniteStateError
from ttrlearn.io import FormatError
from ttrlearn.memories import (
    GatedDeltaMemory,
    KernelRegressionMemory,
    LinearAttentionMemory,
    Memora,
    Moneta,
    OnlineMemory,
    RLSMemory,
    Yaad,
)
from ttrlearn.merge import MergeError, merge_memories

__version__ = "0.1.0.dev0"

__all__ = [
    "BaseMemory",
    "DivergenceWarning",
    "FormatError",
    "GatedDeltaMemory",
    "KernelRegressionMemory",
    "LinearAttentionMemory",
    "Memora",
    "MergeError",
    "Moneta",
    "NonFiniteStateError",
    "OnlineMemory",
    "RLSMemory",
    "Yaad",
    "__version__",
    "available_backends",
    "merge_memories",
]
