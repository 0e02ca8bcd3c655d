"""The memory estimators, one module per family."""

from __future__ import annotations

from ttrlearn.memories.gated_delta import GatedDeltaMemory
from ttrlearn.memories.kernel_regression import KernelRegressionMemory
from ttrlearn.memories.linear_attention import LinearAttentionMemory
from ttrlearn.memories.miras import Memora, Moneta, OnlineMemory, Yaad
from ttrlearn.memories.rls import RLSMemory

__all__ = [
    "GatedDeltaMemory",
    "KernelRegressionMemory",
    "LinearAttentionMemory",
    "Memora",
    "Moneta",
    "OnlineMemory",
    "RLSMemory",
    "Yaad",
]
