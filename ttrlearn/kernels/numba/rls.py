"""Recursive least squares kernels (Numba + SciPy's BLAS/LAPACK).

Same functions, signatures and semantics as :mod:`ttrlearn.kernels.numpy.rls`
(information form: Gram ``H``, cross-moment ``G``). Every product runs on one
BLAS, SciPy's OpenBLAS (the one Numba links through
``scipy.linalg.cython_blas``): numpy and scipy each load their own OpenBLAS,
and alternating between them in a hot path makes their thread pools fight.

* :func:`rls_update`: ``H += X^T diag(c) X`` as a symmetric rank-k update
  (``?syrk``, half the flops of a GEMM) of ``diag(sqrt c) X``, and
  ``G += Y^T diag(c) X`` by GEMM, over row blocks so the weighted copies stay
  in cache; no copy at all when every weight is 1.
* :func:`rls_update_read`: the chunked Woodbury recursion of the numpy kernel
  compiled end to end, calling ``?potrf``/``?trsm``/``?gemm`` directly (no
  Python between chunks). Work is done in the whitened coordinates of the
  chunk's entry Cholesky factor ``R`` (``Hf = R R^T``): ``Z = R^{-1} X^T``
  serves the entry estimate, the residuals and (when the queries are the
  keys) the reads, so one triangular solve replaces three. The chunk loop
  works in place on private copies of ``H`` and ``G^T`` (each chunk's
  rank-C update is two GEMMs with ``beta = e^L``) and on buffers allocated
  once; Cholesky factors of order 40-96 are computed in two blocks (see
  :func:`_chol_lower`).
"""

from __future__ import annotations

import threading
import time

import numpy as np
from numba import njit

from ttrlearn.kernels.numba._blas import dgemm as _dgemm
from ttrlearn.kernels.numba._blas import dpotrf as _dpotrf
from ttrlearn.kernels.numba._blas import dsyrk as _dsyrk
from ttrlearn.kernels.numba._blas import dtrsm as _dtrsm
from ttrlearn.kernels.numba._config import (
    CACHE,
    FASTMATH_RLS,
    part_bounds,
    run_parts,
    run_runs,
    single_thread_blas,
    split_parts,
)
from ttrlearn.kernels.numba.gated_delta import _bounds
from ttrlearn.kernels.numpy import rls as _np_rls
from ttrlearn.kernels.numpy._chunks import LOG_DECAY_BUDGET
from ttrlearn.kernels.numpy.rls import PIVOT_FLOOR

__all__ = ["rls_read", "rls_solve", "rls_update", "rls_update_read"]

rls_read = _np_rls.rls_read


#: ``rls_update`` splits its rows over the workers above this many
#: multiply-adds (``n d (d + d_v)``): below, the hand-off costs more than half
#: the work saves
_SPLIT_WORK = 8_000_000
#: factors below this order are applied by substitution in Numba, not dtrsm
SUBST_MAX = 128
#: ``_syrk_acc`` uses GEMM (twice the flops) when both the rows and the
#: order are at most this: OpenBLAS's ``dsyrk`` is slower there (measured,
#: one thread: order 64 from 64 rows 16 -> 10 us, from 128 rows 29 -> 26 us;
#: 256 rows or order 256, ``dsyrk`` wins)
SYRK_GEMM_MAX = 128
#: rows per block of ``_update`` (the weighted copies stay in cache) ...
_ROWS_PER_BLOCK = 1024
#: ... but ``SYRK_GEMM_MAX`` rows at a time for at most this many features:
#: OpenBLAS's small-matrix GEMM kernels then take every product (one thread,
#: 32,768 rows, decay 0.999, paired medians: d = 32 0.68x, 48 0.74x, 64
#: 0.89x the time of 1024-row blocks; d = 96 1.06x)
_SMALL_BLOCK_MAX_D = 64
#: ``_chol_lower`` factors orders from ``CHOL_SPLIT_MIN`` to
#: ``CHOL_SPLIT_MAX`` as two blocks, the first of order ``CHOL_SPLIT``
#: (measured one thread, LAPACK vs split: order 48 10.4 -> 7.8 us, 64
#: 17.5 -> 13.2, 96 40.0 -> 35.6, 128 72.4 -> 68.9; order 32 takes LAPACK
#: 2.9 us, which splitting does not beat)
CHOL_SPLIT = 32
CHOL_SPLIT_MIN = 40
CHOL_SPLIT_MAX = 96
#: diagonal block of the blocked substitution (16 measured best of 8, 16, 32
#: at orders 64 and 96)
SUBST_BLOCK = 16


def _block_rows(d):
    """Rows per block of :func:`_update` for ``d`` features."""
    return SYRK_GEMM_MAX if d <= _SMALL_BLOCK_MAX_D else _ROWS_PER_BLOCK


# ---------------------------------------------------------------- BLAS layer
# All arrays are C-ordered float64; a C-ordered (m, n) buffer is the Fortran
# (n, m) matrix of its transpose, which is how the calls below are set up.


@njit(cache=CACHE, nogil=True)
def _potrf(L, n, at):
    """LAPACK ``dpotrf`` in place on the order-``n`` diagonal block of the
    C-ordered ``L`` that starts at row and column ``at`` (its lower
    triangle); True when it is positive definite."""
    uplo = np.array([ord("U")], dtype=np.uint8)  # Fortran upper == C lower
    dims = np.array([n, L.shape[0]], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dpotrf(
        uplo.ctypes, dims[0:].ctypes, L[at:, at:].ctypes, dims[1:].ctypes, info.ctypes
    )
    return info[0] == 0


@njit(cache=CACHE, nogil=True)
def _chol_lower(A, shift):
    """Lower Cholesky factor of symmetric ``A + shift I`` (``A`` is copied,
    only its lower triangle is read); ok=False when not positive definite
    or not finite.

    Orders ``CHOL_SPLIT_MIN`` to ``CHOL_SPLIT_MAX`` are factored in two
    blocks, the first of order ``CHOL_SPLIT``: LAPACK on it, the
    off-diagonal block by substitution, its Schur complement by one GEMM,
    LAPACK on that. OpenBLAS factors these orders unblocked, at a few
    GFLOP/s (order 64: 17.5 -> 13.2 us on one thread, same accuracy; 10.8
    us since only the lower triangle is copied and the leading block is
    substituted with in place; 9.8 us since the copy goes into zeros by
    row views, which vectorise)."""
    n = A.shape[0]
    L = np.zeros((n, n))
    for i in range(n):  # the lower triangle, shifted (row views vectorise)
        li = L[i]
        ai = A[i]
        for j in range(i + 1):
            li[j] = ai[j]
        li[i] += shift
    if n < CHOL_SPLIT_MIN or n > CHOL_SPLIT_MAX:
        ok = _potrf(L, n, 0)
    else:
        n1 = CHOL_SPLIT
        n2 = n - n1
        ok = _potrf(L, n1, 0)
        if ok:
            Xt = np.empty((n1, n2))  # L21^T = L11^{-1} A21^T
            for i in range(n2):
                for j in range(n1):
                    Xt[j, i] = L[n1 + i, j]
            _subst(L, Xt, False)  # reads L's leading (n1, n1) block only
            T = np.dot(Xt.T, Xt)
            for i in range(n2):
                for j in range(n1):
                    L[n1 + i, j] = Xt[j, i]
                for j in range(i + 1):
                    L[n1 + i, n1 + j] -= T[i, j]
            ok = _potrf(L, n2, n1)
    for i in range(n):  # (LAPACK leaves the zeros above the diagonal)
        if ok and not np.isfinite(L[i, i]):
            ok = False
    return L, ok


@njit(cache=CACHE, nogil=True)
def _full_rank(R, A):
    """:func:`ttrlearn.kernels.numpy.rls.full_rank` for the factor ``R`` of
    ``A`` (float64): every squared pivot above ``d * eps * max(diag A)``."""
    n = A.shape[0]
    big = 0.0
    for i in range(n):
        big = max(big, A[i, i])
    floor = n * np.finfo(np.float64).eps * big
    for i in range(n):
        if not R[i, i] * R[i, i] > floor:
            return False
    return True


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_RLS)
def _subst(L, B, trans, at=0):
    """Row-oriented substitution, vectorised along the rows of ``B``
    (OpenBLAS's ``dtrsm`` runs at a fraction of GEMM speed below ~128), with
    the diagonal block of ``L`` that starts at row and column ``at`` (read in
    place: no copy of the block)."""
    m, n = B.shape
    if not trans:
        for i in range(m):
            for k in range(i):
                lik = L[at + i, at + k]
                if lik != 0.0:
                    for j in range(n):
                        B[i, j] -= lik * B[k, j]
            inv = 1.0 / L[at + i, at + i]
            for j in range(n):
                B[i, j] *= inv
    else:
        for i in range(m - 1, -1, -1):
            for k in range(i + 1, m):
                lki = L[at + k, at + i]
                if lki != 0.0:
                    for j in range(n):
                        B[i, j] -= lki * B[k, j]
            inv = 1.0 / L[at + i, at + i]
            for j in range(n):
                B[i, j] *= inv


@njit(cache=CACHE, nogil=True)
def _gemm(trans_b, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """Fortran ``C (m, n) <- alpha A (m, k) op(B) + beta C`` in place,
    ``op(B)`` = ``B`` (k, n) or, with ``trans_b``, ``B^T`` for ``B`` (n, k);
    column-major pointers with leading dimensions (views into larger arrays,
    no copies)."""
    ta = np.array([ord("N")], dtype=np.uint8)
    tb = np.array([ord("T") if trans_b else ord("N")], dtype=np.uint8)
    dims = np.array([m, n, k, lda, ldb, ldc], dtype=np.int32)
    ab = np.array([alpha, beta])
    _dgemm(
        ta.ctypes,
        tb.ctypes,
        dims[0:].ctypes,
        dims[1:].ctypes,
        dims[2:].ctypes,
        ab[0:].ctypes,
        A,
        dims[3:].ctypes,
        B,
        dims[4:].ctypes,
        ab[1:].ctypes,
        C,
        dims[5:].ctypes,
    )


@njit(cache=CACHE, nogil=True)
def _subst_blocked(L, B, trans):
    """:func:`_subst` by diagonal blocks of ``SUBST_BLOCK`` rows, each block's
    effect on the rows still to solve applied as one GEMM (the row-by-row
    form reloads and stores each target row once per earlier row: 1.6x
    slower at order 64). The GEMM updates ``B`` in place through views of
    ``L`` and ``B`` (a C-ordered (r, c) block with row stride ``ld`` is the
    Fortran (c, r) matrix with leading dimension ``ld``), and the diagonal
    blocks are read where they lie: no copies, no separate subtraction
    pass."""
    m, n = B.shape
    nb = SUBST_BLOCK
    nblk = (m + nb - 1) // nb
    for step in range(nblk):
        blk = nblk - 1 - step if trans else step
        i0 = blk * nb
        i1 = min(i0 + nb, m)
        _subst(L, B[i0:i1], trans, i0)
        if trans and i0 > 0:
            # B[:i0] -= L[i0:i1, :i0]^T B[i0:i1]; Fortran (n, i0) -= (n, nb)
            # times the transpose of L's block seen as (i0, nb), ld m
            _gemm(
                True, n, i0, i1 - i0, -1.0, B[i0:].ctypes, n, L[i0:].ctypes, m,
                1.0, B.ctypes, n,
            )  # fmt: skip
        elif not trans and i1 < m:
            # B[i1:] -= L[i1:, i0:i1] B[i0:i1]; Fortran (n, m - i1) -= (n, nb)
            # times L's block seen as (nb, m - i1), ld m
            _gemm(
                False, n, m - i1, i1 - i0, -1.0, B[i0:].ctypes, n,
                L[i1:, i0:].ctypes, m, 1.0, B[i1:].ctypes, n,
            )  # fmt: skip


@njit(cache=CACHE, nogil=True)
def _solve_lower(L, B, trans):
    """In place: ``B <- L^{-1} B`` (``trans``: ``L^{-T} B``); L lower (m, m),
    B (m, n). The blocked and BLAS paths take C-ordered arrays; any other
    layout gets the row-by-row substitution."""
    m = L.shape[0]
    if B.shape[1] == 0:
        return
    if m <= SUBST_BLOCK or not (L.flags.c_contiguous and B.flags.c_contiguous):
        _subst(L, B, trans)  # (the BLAS paths take C-ordered arrays)
    elif m < SUBST_MAX:
        _subst_blocked(L, B, trans)
    else:
        _trsm(L, B, trans)


@njit(cache=CACHE, nogil=True)
def _trsm(L, B, trans):
    """``_solve_lower`` by BLAS ``dtrsm``."""
    m, n = B.shape
    if m == 0 or n == 0:
        return
    side = np.array([ord("R")], dtype=np.uint8)
    uplo = np.array([ord("U")], dtype=np.uint8)
    ta = np.array([ord("T") if trans else ord("N")], dtype=np.uint8)
    diag = np.array([ord("N")], dtype=np.uint8)
    mm = np.array([n], dtype=np.int32)
    nn = np.array([m], dtype=np.int32)
    one = np.ones(1)
    _dtrsm(
        side.ctypes,
        uplo.ctypes,
        ta.ctypes,
        diag.ctypes,
        mm.ctypes,
        nn.ctypes,
        one.ctypes,
        L.ctypes,
        nn.ctypes,
        B.ctypes,
        mm.ctypes,
    )


@njit(cache=CACHE, nogil=True)
def _syrk_acc(C, A, beta):
    """``C <- beta C + A^T A`` for C-ordered ``A`` (k, n) and symmetric
    ``C``: the lower triangle holds the result (see :func:`_mirror_lower`).
    BLAS ignores ``C`` when ``beta`` is 0."""
    k, n = A.shape
    if k == 0:
        for i in range(n):
            for j in range(n):
                C[i, j] *= beta
    elif k <= SYRK_GEMM_MAX and n <= SYRK_GEMM_MAX:
        # in place: Fortran sees A as (n, k) = A^T, so C = beta C + A^T A
        # is its (n, n) product with its own transpose
        _gemm(True, n, n, k, 1.0, A.ctypes, n, A.ctypes, n, beta, C.ctypes, n)
    else:
        # Fortran sees A as (n, k) = A^T: C = alpha A^T (A^T)^T, trans='N'
        # (Fortran upper == C lower)
        uplo = np.array([ord("U")], dtype=np.uint8)
        tr = np.array([ord("N")], dtype=np.uint8)
        nn = np.array([n], dtype=np.int32)
        kk = np.array([k], dtype=np.int32)
        one = np.ones(1)
        b = np.array([beta])
        _dsyrk(
            uplo.ctypes,
            tr.ctypes,
            nn.ctypes,
            kk.ctypes,
            one.ctypes,
            A.ctypes,
            nn.ctypes,
            b.ctypes,
            C.ctypes,
            nn.ctypes,
        )


@njit(cache=CACHE, nogil=True)
def _mirror_lower(C):
    """Copy the lower triangle of square ``C`` onto the upper one, so ``C``
    is exactly symmetric."""
    n = C.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            C[i, j] = C[j, i]


# ------------------------------------------------------------------ update


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_RLS)
def _absorb_rows(H, Gt, X, Y, w, log_a, Xs, Ys):
    """In place, for C-ordered rows ``X`` (m, d), ``Y`` (m, d_v):
    ``H <- e^L H + X^T diag(c) X`` (its lower triangle) and
    ``Gt <- e^L Gt + X^T diag(c) Y`` with ``Gt = G^T`` (d, d_v),
    ``c_i = w_i e^(L - L_i)``, ``L`` the rows' total log-decay. The rows are
    scaled by ``sqrt(c_i)`` into the buffers ``Xs``, ``Ys`` (at least m
    rows) unless every ``c_i`` is 1; then two products, no temporaries."""
    m, d = X.shape
    d_v = Y.shape[1]
    tot = 0.0
    plain = True
    for i in range(m):
        tot += log_a[i]
        if log_a[i] != 0.0 or w[i] != 1.0:
            plain = False
    if plain:
        Xu, Yu = X, Y
    else:
        Xu, Yu = Xs[:m], Ys[:m]
        acc = 0.0
        for i in range(m):
            acc += log_a[i]
            r = np.sqrt(w[i] * np.exp(tot - acc))
            for j in range(d):
                Xu[i, j] = r * X[i, j]
            for j in range(d_v):
                Yu[i, j] = r * Y[i, j]
    scale = np.exp(tot)
    if scale == 0.0:
        # BLAS ignores C when beta is 0: scale here, so NaN or infinity in
        # the state carries over (0 * NaN = NaN), as in the NumPy kernel
        for i in range(d):
            for j in range(d):
                H[i, j] *= 0.0
            for j in range(d_v):
                Gt[i, j] *= 0.0
        scale = 1.0
    _syrk_acc(H, Xu, scale)
    # C-ordered (m, d) rows are the Fortran (d, m) matrix Xs^T; Gt, Fortran
    # (d_v, d) = G, gets Ys^T Xs
    _gemm(True, d_v, d, m, 1.0, Yu.ctypes, d_v, Xu.ctypes, d, scale, Gt.ctypes, d_v)


@njit(cache=CACHE, nogil=True)
def _update(H, G, X, Y, w, log_a, block):
    """New ``(H, G)`` after the rows, ``block`` rows at a time (so the
    weighted copies stay in cache)."""
    n, d = X.shape
    m = min(block, n)
    Hn = H.copy()
    Gt = np.ascontiguousarray(G.T)  # a copy: G.T is Fortran-ordered
    Xs = np.empty((m, d))
    Ys = np.empty((m, Y.shape[1]))
    for s in range(0, n, block):
        e = min(s + block, n)
        _absorb_rows(Hn, Gt, X[s:e], Y[s:e], w[s:e], log_a[s:e], Xs, Ys)
    _mirror_lower(Hn)
    return Hn, np.ascontiguousarray(Gt.T)


def rls_update(H, G, X, Y, w, log_a):
    """``H <- e^L H + X^T diag(c) X``, ``G <- e^L G + Y^T diag(c) X`` with
    ``c_i = w_i exp(L - L_i)``. Returns new ``(H, G)`` (``H`` symmetric).

    Long inputs are cut into one run of rows per worker: each computes its
    rows' moments from zero, weighted relative to its own last row, on one
    BLAS thread, and the parts are summed scaled by the decay of the rows
    after them (the update is a sum over rows, so this is exact up to the
    order of the additions). Two workers on one-thread BLAS beat one call on
    two-thread BLAS by ~1.8x here: products of ``d <= 256`` columns split
    badly inside the BLAS.
    """
    dt = H.dtype
    n, d = X.shape
    if n == 0:
        return H.copy(), G.copy()
    f8 = np.float64
    # C order is what the BLAS calls below are set up for (a no-op normally)
    H8, G8, X8, Y8 = (np.ascontiguousarray(a, dtype=f8) for a in (H, G, X, Y))
    # each part adds a few (d, d) passes: only split runs of many rows
    parts = split_parts(
        n, n * d * (d + G.shape[0]), _SPLIT_WORK, min_rows=max(_ROWS_PER_BLOCK, d)
    )
    if parts == 1:
        with single_thread_blas(10_000 < n * d**2 < 2_000_000):
            Hn, Gn = _update(H8, G8, X8, Y8, w, log_a, _block_rows(d))
        return Hn.astype(dt, copy=False), Gn.astype(dt, copy=False)
    zH = np.zeros_like(H8)
    zG = np.zeros_like(G8)

    def part(a, b):
        Hk, Gk = _update(zH, zG, X8[a:b], Y8[a:b], w[a:b], log_a[a:b], _block_rows(d))
        after = np.exp(log_a[b:].sum())  # decay of the later rows
        return after * Hk, after * Gk

    with single_thread_blas():
        moments = run_runs(part, n, parts)
    scale = np.exp(log_a.sum())
    Hn = scale * H8
    Gn = scale * G8
    for Hk, Gk in moments:
        Hn += Hk
        Gn += Gk
    return Hn.astype(dt, copy=False), Gn.astype(dt, copy=False)


# ------------------------------------------------------------------- solve


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_RLS)
def _solve(H, G, ridge):
    """``G (H + ridge I)^{-1}`` by Cholesky; ok=False when not SPD."""
    A = H.copy()
    for i in range(A.shape[0]):
        A[i, i] += ridge
    R, ok = _chol_lower(A, 0.0)
    X = np.ascontiguousarray(G.T)
    if not (ok and _full_rank(R, A)):
        return X, False
    _solve_lower(R, X, False)
    _solve_lower(R, X, True)
    return np.ascontiguousarray(X.T), True


def rls_solve(H, G, ridge):
    """``coef = G (H + ridge I)^{-1}`` by Cholesky (LAPACK through Numba, no
    wrapper overhead: this runs after every ``partial_fit``); the minimum-norm
    solution where the matrix is singular, as the NumPy kernel."""
    f8 = np.float64
    coef, ok = _solve(
        np.ascontiguousarray(H, dtype=f8),
        np.ascontiguousarray(G, dtype=f8),
        float(ridge),
    )
    if not ok or not np.isfinite(coef).all():
        return _np_rls.rls_solve(H, G, ridge)
    return coef.astype(np.result_type(H, G), copy=False)


# ------------------------------------------------------------ update_read


def _update_read(H, G, ridge, decayed, X, Y, Q, q_is_x, w, log_a, after, bounds, O):
    """Chunks ``bounds[c0:]`` in order; returns ``(H, G, c)`` where ``c`` is the
    first chunk that needs the row-by-row path (or the number of chunks).
    (Not compiled itself: a compiled wrapper re-optimised the whole chunk
    loop, ~1.8 s more first-call compilation.)"""
    Hw = H.copy()  # updated in place (its lower triangle is what counts)
    Gt = G.T.copy()  # G^T (d, d_v), C-ordered, updated in place (never a view)
    c = _chunks(Hw, Gt, ridge, decayed, X, Y, Q, q_is_x, w, log_a, after, bounds, O)
    _mirror_lower(Hw)
    return Hw, np.ascontiguousarray(Gt.T), c


@njit(cache=CACHE, nogil=True, fastmath=FASTMATH_RLS)
def _chunks(H, Gt, ridge, decayed, X, Y, Q, q_is_x, w, log_a, after, bounds, O):
    """:func:`_update_read` on ``H`` (only its lower triangle is read and
    kept) and ``Gt = G^T`` in place; returns the chunk it stopped at."""
    d = H.shape[0]
    d_v = Gt.shape[1]
    nc = bounds.shape[0] - 1
    C_max = 1
    for c in range(nc):
        C_max = max(C_max, bounds[c + 1] - bounds[c])
    W = d_v + C_max
    # buffers allocated once (flat, so a shorter chunk's view is contiguous)
    B_buf = np.empty(d * W)
    XM_buf = np.empty(C_max * d_v)
    E_buf = np.empty(C_max * d_v)
    Wt_buf = np.empty(d * C_max)
    S_buf = np.empty(C_max * C_max)
    Xs = np.empty((C_max, d))
    Ys = np.empty((C_max, d_v))
    sq = np.empty(C_max)
    rsq = np.empty(C_max)
    for c in range(nc):
        s = bounds[c]
        e = bounds[c + 1]
        C = e - s
        any_decay = False
        for i in range(s, e):
            if log_a[i] != 0.0:
                any_decay = True
        if not decayed and any_decay:
            return c
        R, ok = _chol_lower(H, ridge)
        if not ok:
            return c
        Xc = X[s:e]
        Yc = Y[s:e]
        # whitened entry estimate: M0 q = GtT^T (R^{-1} q); R^{-1} G^T and
        # R^{-1} X_c^T in one substitution (rows twice as long)
        Wc = d_v + C
        B = B_buf[: d * Wc].reshape((d, Wc))
        for j in range(d):
            for m in range(d_v):
                B[j, m] = Gt[j, m]
            for i in range(C):
                B[j, d_v + i] = Xc[i, j]
        _solve_lower(R, B, False)
        # X_c M0^T = Zx^T GtT with Zx = B[:, d_v:], GtT = B[:, :d_v], read in
        # place: Fortran (d_v, C) = GtT^T Zx
        XM = XM_buf[: C * d_v].reshape((C, d_v))
        _gemm(True, d_v, C, d, 1.0, B.ctypes, Wc, B[:, d_v:].ctypes, Wc, 0.0,
              XM.ctypes, d_v)  # fmt: skip
        la0 = log_a[s]
        root = np.exp(-0.5 * la0)
        lg = 0.0
        for i in range(C):
            if i > 0:
                lg += log_a[s + i]
            sq[i] = np.sqrt(w[s + i] * np.exp(-lg))
        E = E_buf[: C * d_v].reshape((C, d_v))
        for i in range(C):
            for j in range(d_v):
                E[i, j] = (Yc[i, j] - XM[i, j]) * sq[i]
        Wt = Wt_buf[: d * C].reshape((d, C))
        for i in range(C):
            rsq[i] = root * sq[i]
        for j in range(d):  # row views: this loop vectorises (3.4 -> 1 us)
            zrow = B[j, d_v:]
            wrow = Wt[j]
            for i in range(C):
                wrow[i] = zrow[i] * rsq[i]
        S = np.dot(Wt.T, Wt, S_buf[: C * C].reshape((C, C)))
        for i in range(C):
            S[i, i] += 1.0
        Ls, ok2 = _chol_lower(S, 0.0)
        for i in range(C):
            if Ls[i, i] * Ls[i, i] < PIVOT_FLOOR * S[i, i]:
                ok2 = False
        if not ok2:
            return c
        _solve_lower(Ls, E, False)  # Et: whitened a-priori innovations
        innov = q_is_x
        for i in range(C):
            if sq[i] == 0.0:
                innov = False
        if innov:
            # queries are the keys: row t of Et is sq_t e_t / Ls[t, t] with
            # e_t the a-priori residual of row t, and the a-posteriori one is
            # e_t / Ls[t, t]^2 (sequential innovations read off the Cholesky
            # factor), so no (C, C) product is needed for the outputs
            for i in range(C):
                f = 1.0 / (Ls[i, i] * sq[i]) if after else Ls[i, i] / sq[i]
                for j in range(d_v):
                    O[s + i, j] = Yc[i, j] - E[i, j] * f
        else:
            GtT = np.ascontiguousarray(B[:, :d_v])
            if q_is_x:
                Zq = np.ascontiguousarray(B[:, d_v:])
                QM = XM
            else:
                Zq = np.ascontiguousarray(Q[s:e].T)
                _solve_lower(R, Zq, False)
                QM = np.dot(Zq.T, GtT)
            Rq = np.dot(Wt.T, Zq)
            for i in range(C):
                for j in range(C):
                    Rq[i, j] *= root
            _solve_lower(Ls, Rq, False)
            for i in range(C):
                lim = i if after else i + 1
                for j in range(lim):
                    Rq[i, j] = 0.0
            Oc = np.dot(Rq.T, E)
            for i in range(C):
                for j in range(d_v):
                    O[s + i, j] = QM[i, j] + Oc[i, j]
        # the chunk's rank-C update, in place
        _absorb_rows(H, Gt, Xc, Yc, w[s:e], log_a[s:e], Xs, Ys)
    return nc


def _segment(H, G, ridge, decayed, X, Y, Q, q_is_x, w, log_a, after, chunk, O):
    """Causal outputs of rows ``[0, n)`` into ``O`` from entry ``(H, G)``;
    chunks the compiled kernel declines go to the NumPy row-by-row path."""
    bounds = _bounds(log_a, int(chunk), LOG_DECAY_BUDGET)
    nc = bounds.shape[0] - 1
    c0 = 0
    while c0 < nc:
        H, G, c = _update_read(
            H, G, ridge, decayed, X, Y, Q, q_is_x, w, log_a, after, bounds[c0:], O
        )
        c0 += c
        if c0 >= nc:
            break
        s, e = bounds[c0], bounds[c0 + 1]
        if not (np.isfinite(H).all() and np.isfinite(G).all()):
            O[s:] = np.nan  # as the NumPy kernel: it stays non-finite
            return H, G
        O[s:e] = _np_rls._rows_one_by_one(
            H, G, ridge, decayed, X[s:e], Y[s:e], Q[s:e], w[s:e], log_a[s:e], after
        )
        H, G = _np_rls.rls_update(H, G, X[s:e], Y[s:e], w[s:e], log_a[s:e])
        c0 += 1
    return H, G


def _rows(H, G, a, b, ridge, decayed, X, Y, Q, q_is_x, w, log_a, after, chunk, O):
    """:func:`_segment` on rows ``[a, b)`` from their entry state ``(H, G)``."""
    return _segment(
        H, G, ridge, decayed, X[a:b], Y[a:b], Q[a:b], q_is_x, w[a:b], log_a[a:b],
        after, chunk, O[a:b],
    )  # fmt: skip


def _segments(H, G, args, parts):
    """:func:`_segment` on ``parts`` workers in near-equal segments (``args``:
    those of :func:`_segment` after the state): the entry state of each is a
    rank-k update of the one before, computed first (each split over the
    workers). Returns the final ``(H, G)``."""
    _, _, X, Y, _, _, w, log_a, _, _, _ = args
    cuts = part_bounds(X.shape[0], parts)
    entries = [(H, G)]
    for k in range(1, parts):
        a, b = cuts[k - 1], cuts[k]
        entries.append(rls_update(*entries[-1], X[a:b], Y[a:b], w[a:b], log_a[a:b]))

    def seg(k):
        return _rows(*entries[k], cuts[k], cuts[k + 1], *args)

    return run_parts(seg, parts)[-1]


#: A row of the causal chunk loop costs this many times a row absorbed into
#: an entry state alone (a cold rank-k update) until runs have measured it
#: for the shape: the ratio depends on it (one thread, d = d_v, chunk 64:
#: d = 16-32 6.0-6.6, d = 64 3.9; d = 128, chunk 128: 5.0; two threads at
#: d = 64: 3.1-5.6)
CHUNK_OVER_ENTRY = 4.0
#: the ratio as part 1 of two-worker runs measured it, by ``(d, d_v,
#: chunk)``: each run moves it halfway (geometrically) to its own
#: measurement, clipped to ``_RATIO_RANGE`` (a run that compiled, or was
#: preempted, must not mislead the next one)
_chunk_over_entry = {}
_RATIO_RANGE = (2.5, 8.0)


def _two_segments(H, G, args):
    """:func:`_segment` on two workers (``args``: those of :func:`_segment`
    after the state), split where both finish together.

    Part 0 runs the chunks from the first row, in batches until the split
    is known. Part 1 meanwhile absorbs rows into its entry state (the rank-k
    update alone, a few times cheaper a row) and stops at the first row from
    which its own chunk loop would end no later than part 0 reaches that
    row, as projected from both parts' measured pace. A core that runs
    slower than the other (another tenant on it, a busy sibling) thus gets
    fewer rows: a fixed half each waits for the slower part. Returns the
    final ``(H, G)``."""
    _, _, X, Y, _, _, w, log_a, _, chunk, _ = args
    n = X.shape[0]
    step0 = max(chunk, min(2048, n // 16) // chunk * chunk)
    step1 = max(chunk, min(1024, n // 32) // chunk * chunk)
    lock = threading.Lock()
    split = [None]  # part 1's first row, once decided
    claimed = [0]  # part 0 runs every row below this
    pace = [0, 0.0]  # rows part 0 has finished, and when
    shape = (H.shape[0], G.shape[0], chunk)
    ratio = _chunk_over_entry.get(shape, CHUNK_OVER_ENTRY)
    t0 = time.perf_counter()

    def decide(s, t1):
        """Part 1, having absorbed the rows below ``s`` since ``t1``: split
        there (True) if it would then finish no later than part 0 reaches
        ``s``; None when part 0 has taken every row (nothing left to
        split)."""
        now = time.perf_counter()
        with lock:
            if claimed[0] >= n:
                split[0] = n
                return None
            if not claimed[0] or claimed[0] > s:  # (not started: no pace)
                return False
            # part 0's time a row: at least the time so far over the rows it
            # has taken on, and what it took for the rows it has finished
            per0 = (now - t0) / claimed[0]
            done, when = pace
            if done:
                per0 = max(per0, (when - t0) / done)
            ends = now + (n - s) * (now - t1) / s * ratio
            if ends > t0 + s * per0:
                return False
            split[0] = s
            return True

    def part(k):
        if k == 0:
            Hc, Gc, a = H, G, 0
            while a < n:
                with lock:
                    s = split[0]
                    b = s if s is not None else min(a + step0, n)
                    claimed[0] = b
                if a < b:
                    Hc, Gc = _rows(Hc, Gc, a, b, *args)
                a = b
                with lock:
                    pace[:] = [a, time.perf_counter()]
                if s is not None:
                    break
            return Hc, Gc
        Hc, Gc, s = H, G, 0
        t1 = time.perf_counter()
        while s < n - chunk:  # (part 1 keeps at least one chunk: n - s > 0)
            b = min(s + step1, n - chunk)
            Hc, Gc = _update(
                Hc, Gc, X[s:b], Y[s:b], w[s:b], log_a[s:b], _block_rows(H.shape[0])
            )
            s = b
            go = decide(s, t1)
            if go is None:
                return None
            if go:
                t2 = time.perf_counter()
                out = _rows(Hc, Gc, s, n, *args)
                per_row = (time.perf_counter() - t2) / (n - s)
                seen = min(
                    max(per_row / ((t2 - t1) / s), _RATIO_RANGE[0]), _RATIO_RANGE[1]
                )
                _chunk_over_entry[shape] = float(np.sqrt(ratio * seen))
                return out
        with lock:  # part 0 is too far ahead to share the rest: it runs them
            split[0] = n
        return None

    first, second = run_parts(part, 2)
    return first if second is None else second


def rls_update_read(H, G, ridge, decayed, X, Y, Q, w, log_a, after, chunk_size):
    """Causal outputs ``coef_t q_t`` and the final ``(H, G)``.

    The chunked Woodbury recursion of
    :func:`ttrlearn.kernels.numpy.rls.rls_update_read` (see there for the
    algebra), compiled. When the queries are the keys, each chunk's outputs
    come from the diagonal of the Cholesky factor of its Woodbury system
    (the sequential innovations), with no ``(C, C)`` product. Long inputs
    are cut into one segment per core: the entry system of a segment is a
    single rank-k update of the previous one (the information form makes
    that exact), and the segments then run in parallel; on two cores the
    cut follows the pace each core shows (:func:`_two_segments`). Chunks
    the NumPy kernel would solve row by row are handed to it. Computation
    is in float64 whatever the state dtype.
    """
    n = X.shape[0]
    dt = H.dtype
    f8 = np.float64
    O = np.empty((n, G.shape[0]), dtype=f8)
    if n == 0:
        return O.astype(dt), H.copy(), G.copy()
    q_is_x = Q is X
    H, G, X, Y = (np.ascontiguousarray(a, dtype=f8) for a in (H, G, X, Y))
    Q = X if q_is_x else np.ascontiguousarray(Q, dtype=f8)
    ridge = float(ridge)
    decayed = bool(decayed)
    after = bool(after)
    parts = split_parts(n, min_rows=max(4 * chunk_size, 2048))
    args = (ridge, decayed, X, Y, Q, q_is_x, w, log_a, after, chunk_size, O)
    with single_thread_blas(n > 64):
        if parts == 1:
            H, G = _segment(H, G, *args)
        elif parts == 2:
            H, G = _two_segments(H, G, args)
        else:
            H, G = _segments(H, G, args, parts)
    return O.astype(dt, copy=False), H.astype(dt, copy=False), G.astype(dt, copy=False)
