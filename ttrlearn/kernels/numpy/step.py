"""One-pair kernels (NumPy): the streaming fast path of the estimators.

A stream fed one pair per call spends almost all its time in the general
machinery (validation, per-row gate arrays, chunk planning), not in the
arithmetic. These kernels absorb a single pair and check finiteness
themselves, so the estimators can skip that machinery for plain one-row host
input. Here they are the family kernels applied to one row, plus the checks
(the reference for the fused Numba versions). Each returns its results and a
status code:

* ``STEP_OK`` (0): done;
* ``STEP_BAD_INPUT`` (1): the input holds NaN or infinity;
* ``STEP_BAD_STATE`` (2): the result is not finite (or, for RLS, the system
  is not positive definite);
* ``STEP_UNSTABLE`` (3): the explicit delta step is outside its stable range;
* ``STEP_BAD_SHAPE`` (4): the shapes of state and input disagree (a state
  that was edited or loaded inconsistently).

On any non-zero status the estimator discards the results and takes the
general path, which raises, warns or falls back exactly as for any input.
Pure functions; inputs are never mutated.
"""

from __future__ import annotations

import numpy as np

from ttrlearn._utils import sq_norms, unit_rows
from ttrlearn._validation import all_finite
from ttrlearn.kernels.numpy.gated_delta import gd_update, implicit_steps
from ttrlearn.kernels.numpy.linear_attention import la_update
from ttrlearn.kernels.numpy.rls import cholesky_solve, rls_update

__all__ = ["all_finite", "gd_step", "la_step", "rls_step", "unit_rows", "unit_rows_sq"]

STEP_OK, STEP_BAD_INPUT, STEP_BAD_STATE, STEP_UNSTABLE, STEP_BAD_SHAPE = range(5)

#: Explicit delta steps with ``rate ||k||^2`` at or above this are declined:
#: the general path, whose ``||k||^2`` may round differently, then decides
#: whether the step reaches 2 and warns.
UNSTABLE_BELOW = 2.0 * (1.0 - 1e-4)


def _finite(*arrays):
    return all(all_finite(a) for a in arrays)


def _one(x):
    return np.array([x], dtype=np.float64)


def la_step(M, z, phi, v, log_a):
    """One pair of linear attention: ``M <- a M + v phi^T``, ``z <- a z + phi``.

    ``M`` (d_v, d_phi), ``z`` (d_phi,), ``phi`` (d_phi,) the feature-mapped
    key, ``v`` (d_v,), ``log_a`` the log-decay. Returns ``(M, z, status)``.
    The update is :func:`~ttrlearn.kernels.numpy.linear_attention.la_update`
    on one row.
    """
    if M.shape != (v.shape[0], phi.shape[0]) or z.shape != phi.shape:
        return M, z, STEP_BAD_SHAPE
    if not _finite(phi, v):
        return M, z, STEP_BAD_INPUT
    with np.errstate(over="ignore", invalid="ignore"):
        M_new, z_new = la_update(M, z, phi[None], v[None], np.ones(1), _one(log_a))
    if not _finite(M_new, z_new):
        return M, z, STEP_BAD_STATE
    return M_new, z_new, STEP_OK


def gd_step(M, x, v, rate, log_a, normalize, implicit):
    """One pair of the gated delta rule:
    ``M <- a M + b (v - a M k) k^T``.

    ``x`` (d_k,) the raw key (scaled to unit length when ``normalize``),
    ``rate`` the learning rate, ``b = rate`` (explicit step, status
    ``STEP_UNSTABLE`` when ``rate ||k||^2`` nears 2) or
    ``rate / (1 + rate ||k||^2)`` (implicit step). Returns ``(M, status)``;
    the update is :func:`~ttrlearn.kernels.numpy.gated_delta.gd_update` on
    one row.
    """
    if M.shape != (v.shape[0], x.shape[0]):
        return M, STEP_BAD_SHAPE
    if not _finite(x, v):
        return M, STEP_BAD_INPUT
    k = unit_rows(x[None]) if normalize else x[None]
    k2 = float(sq_norms(k)[0])  # as the general path's step sizes
    if not implicit and rate * k2 >= UNSTABLE_BELOW:
        return M, STEP_UNSTABLE
    b = implicit_steps(rate, k2) if implicit else rate
    with np.errstate(over="ignore", invalid="ignore"):
        M_new = gd_update(M, k, v[None], _one(b), _one(log_a), 1)
    if not _finite(M_new):
        return M, STEP_BAD_STATE
    return M_new, STEP_OK


def rls_step(H, G, x, v, log_a, ridge, floor):
    """One pair of RLS in information form, and the new estimate.

    ``H <- a H + x x^T + f (1 - a) I`` (``f`` the eigenvalue floor ``floor``),
    ``G <- a G + v x^T`` (:func:`~ttrlearn.kernels.numpy.rls.rls_update` on
    one row), ``coef = G (H + ridge I)^{-1}``
    (:func:`~ttrlearn.kernels.numpy.rls.cholesky_solve`). Returns
    ``(H, G, coef, status)``; ``STEP_BAD_STATE`` also when ``H + ridge I`` is
    not numerically full rank (the general path then takes the minimum-norm
    solution).
    """
    d = x.shape[0]
    if H.shape != (d, d) or G.shape != (v.shape[0], d):
        return H, G, G, STEP_BAD_SHAPE
    if not _finite(x, v):
        return H, G, G, STEP_BAD_INPUT
    with np.errstate(over="ignore", invalid="ignore"):
        Hn, Gn = rls_update(H, G, x[None], v[None], np.ones(1), _one(log_a))
        if floor and log_a:
            Hn = Hn + Hn.dtype.type(-floor * np.expm1(log_a)) * np.eye(d, dtype=H.dtype)
    if not _finite(Hn, Gn):
        return H, G, G, STEP_BAD_STATE
    coef = cholesky_solve(Hn, Gn, ridge)
    if coef is None or not _finite(coef):
        return H, G, G, STEP_BAD_STATE
    return Hn, Gn, coef.astype(H.dtype, copy=False), STEP_OK


def unit_rows_sq(X):
    """``(unit_rows(X), squared norms of those rows)``, the norms in float64."""
    K = unit_rows(X)
    return K, sq_norms(K)
