"""Synthetic data for associative memories: MQAR token sequences and
key-value streams."""

from __future__ import annotations

from ttrlearn.datasets._kv import make_keys, make_kv_stream
from ttrlearn.datasets._mqar import IGNORE_INDEX, make_forgetting_mqar, make_mqar

__all__ = [
    "IGNORE_INDEX",
    "make_forgetting_mqar",
    "make_keys",
    "make_kv_stream",
    "make_mqar",
]
