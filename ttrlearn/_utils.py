"""Small helpers shared by the estimators, the functional ops and the launchers."""

from __future__ import annotations

import inspect
import os
import sys

import numpy as np

__all__ = ["fill_doc", "sq_norms", "unit_rows", "user_stacklevel"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_stacklevel():
    """The ``stacklevel`` that makes a ``warnings.warn`` in the calling
    function name the first frame outside ttrlearn (the user's call, however
    many of the package's own frames lie between: ``fit`` calls
    ``partial_fit``, hooks call hooks)."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        level += 1
    return level


def fill_doc(entries):
    """Decorator filling the ``%(name)s`` entries of a docstring from ``entries``.

    The docstring is dedented first (``inspect.cleandoc``), so entries written
    flush left, one per repeated numpydoc parameter block, line up with the
    section they land in. Docstrings that are None (``python -OO``) stay None.
    """

    def fill(func):
        if func.__doc__:
            func.__doc__ = inspect.cleandoc(func.__doc__) % entries
        return func

    return fill


def sq_norms(X):
    """Squared Euclidean norm of each row, summed in float64 (any array
    module: NumPy dispatches to CuPy)."""
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def unit_rows(X):
    """Rows scaled to unit length (zero rows stay zero), exact at any magnitude.

    Rows are first divided by their largest absolute entry, so the squared norm
    neither overflows (``|x| ~ 1e300``) nor underflows (``|x| ~ 1e-300``).
    """
    big = np.abs(X).max(axis=1)[:, None]  # no initial=: CuPy's max lacks it
    Y = X / np.where(big > 0, big, 1)
    nrm = np.sqrt(np.einsum("ij,ij->i", Y, Y))
    return Y / np.where(nrm > 0, nrm, 1)[:, None]
