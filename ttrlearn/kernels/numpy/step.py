"""One-pair kernels (NumPy): the streaming fast path of the estimators.

A stream fed one pair per call spends almost all its time in the general
machinery (validation, per-row gate arrays, chunk planning), not in the
arithmetic. These kernels absorb a single pair and check finiteness
themselves, so the estimators can skip that machinery for
plain one-row host input. Each returns its results and a status code:

* ``STEP_OK`` (0): done;
* ``STEP_BAD_INPUT`` (1): the input holds NaN or infinity;
* ``STEP_BAD_STATE`` (2): the result is not finite (or, for RLS, the system
  is not positive definite);
* ``STEP_UNSTABLE`` (3): the explicit delta step is outside its stable range;
* ``STEP_BAD_SHAPE`` (4): the shapes of state and input disagree (a state
  that was edited or loaded inconsistently).

On any non-zero status the estimator discards the results and takes the
general path, which raises, warns or falls back exactly as for any input. A
one-row update is the chunked kernels' update with a chunk of one row, so
the two paths agree to rounding. Pure functions; inputs are never mutated.
"""

from __future__ import annotations

import numpy as np

from ttrlearn._utils import unit_rows
from ttrlearn.kernels.numpy.rls import full_rank

__all__ = ["all_finite", "gd_step", "la_step", "rls_step", "unit_rows"]

STEP_OK, STEP_BAD_INPUT, STEP_BAD_STATE, STEP_UNSTABLE, STEP_BAD_SHAPE = range(5)

#: Explicit delta steps with ``rate ||k||^2`` at or above this are declined:
#: the general path, whose ``||k||^2`` may round differently, then decides
#: whether the step reaches 2 and warns.
UNSTABLE_BELOW = 2.0 * (1.0 - 1e-4)


def _finite(*arrays):
    return all(all_finite(a) for a in arrays)


def la_step(M, z, phi, v, log_a):
    """One pair of linear attention: ``M <- a M + v phi^T``, ``z <- a z + phi``.

    ``M`` (d_v, d_phi), ``z`` (d_phi,), ``phi`` (d_phi,) the feature-mapped
    key, ``v`` (d_v,), ``log_a`` the log-decay. Returns ``(M, z, status)``.
    """
    if M.shape != (v.shape[0], phi.shape[0]) or z.shape != phi.shape:
        return M, z, STEP_BAD_SHAPE
    if not _finite(phi, v):
        return M, z, STEP_BAD_INPUT
    a = M.dtype.type(np.exp(log_a))
    with np.errstate(over="ignore", invalid="ignore"):
        M_new = a * M + np.outer(v, phi)
        z_new = a * z + phi
    if not _finite(M_new, z_new):
        return M, z, STEP_BAD_STATE
    return M_new, z_new, STEP_OK


def _unit(x):
    """``x / ||x||`` computed as :func:`ttrlearn._utils.unit_rows` does."""
    big = np.abs(x).max()
    y = x / big if big > 0 else x
    nrm = np.sqrt(y @ y)
    return y / nrm if nrm > 0 else y


def gd_step(M, x, v, rate, log_a, normalize, implicit):
    """One pair of the gated delta rule:
    ``M <- a M + b (v - a M k) k^T``.

    ``x`` (d_k,) the raw key (scaled to unit length when ``normalize``),
    ``rate`` the learning rate, ``b = rate`` (explicit step, status
    ``STEP_UNSTABLE`` when ``rate ||k||^2 >= 2``) or
    ``rate / (1 + rate ||k||^2)`` (implicit step). Returns ``(M, status)``.
    """
    if M.shape != (v.shape[0], x.shape[0]):
        return M, STEP_BAD_SHAPE
    if not _finite(x, v):
        return M, STEP_BAD_INPUT
    k = _unit(x) if normalize else x
    k2 = float(k @ k)
    b = rate
    if implicit:
        b = b / (1.0 + b * k2)
    elif b * k2 >= UNSTABLE_BELOW:
        return M, STEP_UNSTABLE
    dt = M.dtype.type
    a, bt = dt(np.exp(log_a)), dt(b)
    with np.errstate(over="ignore", invalid="ignore"):
        e = bt * (v - a * (M @ k))
        M_new = a * M + np.outer(e, k)
    if not _finite(M_new):
        return M, STEP_BAD_STATE
    return M_new, STEP_OK


def rls_step(H, G, x, v, log_a, ridge, floor):
    """One pair of RLS in information form, and the new estimate.

    ``H <- a H + x x^T + f (1 - a) I`` (``f`` the eigenvalue floor ``floor``),
    ``G <- a G + v x^T``, ``coef = G (H + ridge I)^{-1}`` by Cholesky, all in
    float64, stored in ``H``'s dtype. Returns ``(H, G, coef, status)``;
    ``STEP_BAD_STATE`` also when ``H + ridge I`` is not positive definite (the
    general path then takes the minimum-norm solution).
    """
    d = x.shape[0]
    if H.shape != (d, d) or G.shape != (v.shape[0], d):
        return H, G, G, STEP_BAD_SHAPE
    if not _finite(x, v):
        return H, G, G, STEP_BAD_INPUT
    f8, dt = np.float64, H.dtype
    a = float(np.exp(log_a))
    xd = x.astype(f8)
    with np.errstate(over="ignore", invalid="ignore"):
        Hn = a * H.astype(f8) + np.outer(xd, xd)
        if floor and log_a:
            Hn[np.diag_indices_from(Hn)] -= floor * np.expm1(log_a)
        Gn = a * G.astype(f8) + np.outer(v.astype(f8), xd)
    Hn, Gn = Hn.astype(dt), Gn.astype(dt)
    if not _finite(Hn, Gn):
        return H, G, G, STEP_BAD_STATE
    A = Hn.astype(f8) + ridge * np.eye(H.shape[0])
    try:
        L = np.linalg.cholesky(A)
    except np.linalg.LinAlgError:
        return H, G, G, STEP_BAD_STATE
    if not full_rank(np.diag(L), np.diag(A), f8):  # the min-norm solution
        return H, G, G, STEP_BAD_STATE
    coef = np.linalg.solve(L.T, np.linalg.solve(L, Gn.astype(f8).T)).T
    coef = coef.astype(dt)
    if not _finite(coef):
        return H, G, G, STEP_BAD_STATE
    return Hn, Gn, coef, STEP_OK


def all_finite(a):
    """True when every entry of ``a`` is finite."""
    return bool(np.isfinite(a).all())
