// gated_delta_chunk.cu -- gated delta rule, chunk-wise (WY/UT form), B streams.
//
// Recurrence, per stream b and step t (state M of shape (d_v, d_k), readout M q):
//     M_t = a_t M_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T
//     o_t = M_t q_t      (read_after = 1)
//     o_t = M_{t-1} q_t  (read_after = 0: before the write of pair t and
//                         before its decay)
// This is the same recurrence as gated_delta.cu (decay before the error), in
// the chunked form of Gated DeltaNet / flash-linear-attention. For a chunk of
// C = TTR_TILE rows with entry state M, in-chunk cumulative log-decays
// lg_r = sum_{s<=r} log a_s and gamma_r = e^{lg_r}:
//     A   = strict_lower(diag(beta) K K^T * G),  G_ri = e^{lg_r - lg_i} (i <= r)
//     E   = diag(beta) (V - diag(gamma) K M^T)                       (C, d_v)
//     U~  = (I + A)^{-1} E      (forward substitution, in shared memory)
//     o_t = e^{lr_t} M q_t + sum_{i in I_t} e^{lr_t - lg_i} (q_t . k_i) U~_i
//     M'  = gamma_{C-1} M + sum_i e^{lg_{C-1} - lg_i} U~_i k_i^T
// where lr_t = lg_t and I_t = {i <= t} when reading after the write, and
// lr_t = lg_{t-1} (0 for t = 0) and I_t = {i < t} when reading before it.
// (U~ = U - W S of the WY form with U = T diag(beta) V, W = T diag(beta gamma) K,
// T = (I + A)^{-1}, S = M^T; W is never formed.) Decays live in log space:
// only differences lg_r - lg_i <= 0 (i <= r) are exponentiated, so nothing
// overflows whatever the decays, and chunks need no splitting. The log-decays
// come in double, also to the float32 kernel: a decay rounded to float32
// before its log is taken would be off by up to 2^-25 / (1 - a) relatively in
// log a (1.4e-3 for a = 0.99999), an error that every row of a constant gate
// repeats, so the cumulative decay would drift with T. The cumulative sums are
// kept in double too (16 additions per chunk), so a ratio of nearby rows does
// not lose digits to a large cumulative decay. A log-decay below -1000 (a gate
// a = 0, log a = -inf) enters as -1000: every ratio across it is
// e^{<= -1000} = 0, exactly a reset, as in the loop.
//
// Shapes (row-major, contiguous):
//     q, k (B, T, d_k)   v (B, T, d_v)   beta (B, T)
//     log_a (B, T) double in both kernels, log a <= 0 (-inf allowed)
//     M (B, d_v, d_k), read on entry and overwritten with the final state
//     o (B, T, d_v)
// Launch geometry:
//     At most 65535 streams per launch (B is gridDim.y); the launchers run
//     larger batches in slices, on pointers offset to each slice's start.
//     grid = (ceil(d_v / 16), B, 1), block = (256, 1, 1), no dynamic shared
//     memory. A block owns 16 rows of M (one value tile) of one stream (the
//     rows of M evolve independently given k, a, beta) and walks the chunks
//     in order; the state stays in global memory and is updated in place, so
//     d_k and d_v have no limit. Per chunk:
//       0. thread 0 forms the log-decays, gamma, beta and the tail factors;
//       1. thread (r, c) = (tid / 16, tid % 16) accumulates k_r . k_c,
//          q_r . k_c, k_r . m_c and q_r . m_c from Q, K and the state tile
//          staged 32 features at a time (2 barriers per 32 features);
//       2. it writes A[r][c], E[r][c] and the masked decayed score P[r][c];
//       3. the 16 threads of the first warp solve (I + A) U~ = E by forward
//          substitution, one value column each, in shared memory;
//       4. thread (t, c) writes o_t[c]; then every thread updates its share of
//          the 16 x d_k state tile.
//     Static shared memory: 3 * 16 * 33 + 4 * 16 * 17 + 64 values of T plus
//     32 doubles (11200 bytes float32, 22144 bytes float64). Per chunk
//     2 * ceil(d_k / 32) + 4 barriers; no inter-block communication.
// Entry points:
//     ttr_gated_delta_chunk_f32, ttr_gated_delta_chunk_f64
#include "common.cuh"

namespace ttr {

template <typename T>
__device__ __forceinline__ void gated_delta_chunk(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const double* __restrict__ log_a, const T* __restrict__ beta, T* __restrict__ M,
    T* __restrict__ o, int n_steps, int dk, int dv, int read_after) {
  __shared__ T qs[TTR_TILE][TTR_DK + 1];
  __shared__ T ks[TTR_TILE][TTR_DK + 1];
  __shared__ T ms[TTR_TILE][TTR_DK + 1];  // state tile: value row, feature
  __shared__ T A[TTR_TILE][TTR_TILE + 1];   // strict lower beta (k.k) ratio
  __shared__ T P[TTR_TILE][TTR_TILE + 1];   // masked decayed q.k scores
  __shared__ T E[TTR_TILE][TTR_TILE + 1];   // errors, then U~ (in place)
  __shared__ T Us[TTR_TILE][TTR_TILE + 1];  // U~ scaled by the tail factor
  __shared__ double lg[TTR_TILE];  // cumulative log decay within the chunk
  __shared__ double lr[TTR_TILE];  // log decay of the state each row reads
  __shared__ T gam[TTR_TILE];      // e^{lg_r}
  __shared__ T gr[TTR_TILE];       // e^{lr_r}
  __shared__ T bet[TTR_TILE];      // step sizes (0 past the chunk's end)
  __shared__ T tail[TTR_TILE];     // e^{lg_last - lg_r}

  const int tid = threadIdx.x;
  const int ti = tid / TTR_TILE;
  const int tj = tid % TTR_TILE;
  const i64 b = blockIdx.y;
  const int c0 = blockIdx.x * TTR_TILE;
  const bool col = c0 + tj < dv;

  for (int s = 0; s < n_steps; s += TTR_TILE) {
    const int n = min_(TTR_TILE, n_steps - s);
    const i64 base = b * n_steps + s;  // flat (b, s) row index
    if (tid == 0) {
      double acc = 0, prev = 0;
      for (int r = 0; r < TTR_TILE; ++r) {
        // fmax: -inf (a = 0) and NaN enter as -1000 (a ternary here made
        // ptxas spill 8 bytes in the float64 kernel for sm_90)
        if (r < n) acc += fmax(log_a[base + r], -1000.0);
        lg[r] = acc;  // rows past the end repeat the last (a = 1, beta = 0)
        lr[r] = read_after ? acc : prev;
        prev = acc;
        gam[r] = exp_(T(acc));
        gr[r] = exp_(T(lr[r]));
        bet[r] = r < n ? beta[base + r] : T(0);
      }
      for (int r = 0; r < TTR_TILE; ++r) tail[r] = exp_(T(acc - lg[r]));
    }
    __syncthreads();  // publishes lg, lr, gam, gr, bet, tail (also when dk = 0)

    T kk = 0, qk = 0, km = 0, qm = 0;
    for (int j0 = 0; j0 < dk; j0 += TTR_DK) {
      for (int e = tid; e < TTR_TILE * TTR_DK; e += TTR_THREADS) {
        const int rr = e / TTR_DK, cc = e % TTR_DK, jj = j0 + cc;
        const bool in = rr < n && jj < dk;
        qs[rr][cc] = in ? q[(base + rr) * dk + jj] : T(0);
        ks[rr][cc] = in ? k[(base + rr) * dk + jj] : T(0);
        ms[rr][cc] = (c0 + rr < dv && jj < dk) ? M[(b * dv + c0 + rr) * dk + jj] : T(0);
      }
      __syncthreads();
#pragma unroll 4
      for (int cc = 0; cc < TTR_DK; ++cc) {
        const T kr = ks[ti][cc], qr = qs[ti][cc];
        const T kc = ks[tj][cc], mc = ms[tj][cc];
        kk += kr * kc;
        qk += qr * kc;
        km += kr * mc;
        qm += qr * mc;
      }
      __syncthreads();  // the next feature block overwrites qs / ks / ms
    }

    A[ti][tj] = tj < ti ? bet[ti] * kk * exp_(T(lg[ti] - lg[tj])) : T(0);
    E[ti][tj] =
        (ti < n && col) ? bet[ti] * (v[(base + ti) * dv + c0 + tj] - gam[ti] * km) : T(0);
    const bool ok = read_after ? tj <= ti : tj < ti;
    P[ti][tj] = ok ? qk * exp_(T(lr[ti] - lg[tj])) : T(0);
    const T inter = gr[ti] * qm;  // e^{lr_t} (M q_t)[c]: the entry state's part
    __syncthreads();

    if (tid < TTR_TILE) {  // forward substitution, one value column per thread
      const int c = tid;
      for (int r = 1; r < n; ++r) {
        T acc = E[r][c];
        for (int i = 0; i < r; ++i) acc -= A[r][i] * E[i][c];
        E[r][c] = acc;
      }
      for (int r = 0; r < TTR_TILE; ++r) Us[r][c] = E[r][c] * tail[r];
    }
    __syncthreads();

    if (ti < n && col) {
      T acc = inter;
      for (int i = 0; i < TTR_TILE; ++i) acc += P[ti][i] * E[i][tj];
      o[(base + ti) * dv + c0 + tj] = acc;
    }
    // M' = gamma_{C-1} M + sum_i e^{lg_{C-1} - lg_i} U~_i k_i^T
    update_state_tile(M, k, b, c0, dv, dk, base, n, gam[TTR_TILE - 1],
                      [&](int i, int c) { return Us[i][c]; });
    __syncthreads();  // the next chunk overwrites the shared arrays and reads M
  }
}

}  // namespace ttr

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_gated_delta_chunk_f32(
    const float* __restrict__ q, const float* __restrict__ k,
    const float* __restrict__ v, const double* __restrict__ log_a,
    const float* __restrict__ beta, float* __restrict__ M, float* __restrict__ o,
    int n_steps, int dk, int dv, int read_after) {
  ttr::gated_delta_chunk<float>(q, k, v, log_a, beta, M, o, n_steps, dk, dv,
                                read_after);
}

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_gated_delta_chunk_f64(
    const double* __restrict__ q, const double* __restrict__ k,
    const double* __restrict__ v, const double* __restrict__ log_a,
    const double* __restrict__ beta, double* __restrict__ M,
    double* __restrict__ o, int n_steps, int dk, int dv, int read_after) {
  ttr::gated_delta_chunk<double>(q, k, v, log_a, beta, M, o, n_steps, dk, dv,
                                 read_after);
}
