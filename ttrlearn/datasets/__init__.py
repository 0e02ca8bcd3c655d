"""Data for associative memories: MQAR token sequences, key-value streams,
and small bundled real series (sunspots, co2, nile)."""

from __future__ import annotations

from ttrlearn.datasets._kv import make_keys, make_kv_stream
from ttrlearn.datasets._mqar import IGNORE_INDEX, make_forgetting_mqar, make_mqar
from ttrlearn.datasets._series import (
    SERIES,
    load_co2,
    load_nile,
    load_series,
    load_sunspots,
)

__all__ = [
    "IGNORE_INDEX",
    "SERIES",
    "load_co2",
    "load_nile",
    "load_series",
    "load_sunspots",
    "make_forgetting_mqar",
    "make_keys",
    "make_kv_stream",
    "make_mqar",
]
