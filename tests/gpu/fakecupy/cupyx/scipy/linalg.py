"""Fake ``cupyx.scipy.linalg``: SciPy on the wrapped buffers, CuPy's signature."""

from __future__ import annotations

import scipy.linalg as _sl
from cupy import _unwrap, _wrap

__all__ = ["solve_triangular"]


def solve_triangular(
    a,
    b,
    trans=0,
    lower=False,
    unit_diagonal=False,
    overwrite_b=False,
    check_finite=False,
):
    """``cupyx.scipy.linalg.solve_triangular`` (CuPy 14.2 signature)."""
    return _wrap(
        _sl.solve_triangular(
            _unwrap(a),
            _unwrap(b),
            trans=trans,
            lower=lower,
            unit_diagonal=unit_diagonal,
            check_finite=False,
        )
    )
