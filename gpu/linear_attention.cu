// linear_attention.cu -- decayed linear attention, chunk-wise, B independent streams.
//
// Recurrence, per stream b (state M of shape (d_v, d_k), readout M q):
//     M_t = a_t M_{t-1} + w_t v_t k_t^T,   o_t = M_t q_t      (read_after = 1)
//                                          o_t = M_{t-1} q_t  (read_after = 0)
// For a chunk of C = TTR_TILE rows with entry state M and in-chunk cumulative
// log-decays lg_r = sum_{s<=r} log a_s (log space: only differences
// lg_t - lg_i <= 0 with i <= t are exponentiated, so nothing overflows):
//     o_t   = e^{lr_t} M q_t + sum_{i in I_t} e^{lr_t - lg_i} w_i (q_t . k_i) v_i
//     M_out = e^{lg_{C-1}} M + sum_i e^{lg_{C-1} - lg_i} w_i v_i k_i^T
// where lr_t = lg_t and I_t = {i <= t} when reading after the write, and
// lr_t = lg_{t-1} (0 for t = 0) and I_t = {i < t} when reading before it.
//
// Shapes (row-major, contiguous):
//     q, k (B, T, d_k)   v (B, T, d_v)   log_a, w (B, T)
//     M (B, d_v, d_k), read on entry and overwritten with the final state
//     o (B, T, d_v)
// Launch geometry:
//     At most 65535 streams per launch (B is gridDim.y); the launchers run
//     larger batches in slices, on pointers offset to each slice's start.
//     grid = (ceil(d_v / 16), B, 1), block = (256, 1, 1), no dynamic shared
//     memory. A block owns 16 rows of M (one value tile) of one stream and
//     walks the chunks in order; thread (t, i) = (tid / 16, tid % 16) forms the
//     decayed masked score A[t][i] = (q_t . k_i) w_i e^{lr_t - lg_i} from Q and K
//     staged 32 features at a time; thread (t, c) then forms o_t[c] from A V
//     plus the inter-chunk term, and the state tile is updated in place.
// Entry points:
//     ttr_linear_attention_chunk_f32, ttr_linear_attention_chunk_f64
#include "common.cuh"

namespace ttr {

template <typename T>
__device__ __forceinline__ void linear_attention_chunk(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ log_a, const T* __restrict__ w, T* __restrict__ M,
    T* __restrict__ o, int n_steps, int dk, int dv, int read_after) {
  __shared__ T qs[TTR_TILE][TTR_DK + 1];
  __shared__ T ks[TTR_TILE][TTR_DK + 1];
  __shared__ T A[TTR_TILE][TTR_TILE + 1];
  __shared__ T Vs[TTR_TILE][TTR_TILE + 1];
  __shared__ T lg[TTR_TILE];    // cumulative log decay within the chunk
  __shared__ T lr[TTR_TILE];    // log decay of the state each row reads
  __shared__ T wv[TTR_TILE];    // write weights (0 past the chunk's end)
  __shared__ T coef[TTR_TILE];  // w_i e^{lg_last - lg_i}

  const int tid = threadIdx.x;
  const int ti = tid / TTR_TILE;
  const int tj = tid % TTR_TILE;
  const i64 b = blockIdx.y;
  const int c0 = blockIdx.x * TTR_TILE;

  for (int s = 0; s < n_steps; s += TTR_TILE) {
    const int n = min_(TTR_TILE, n_steps - s);
    const i64 base = b * n_steps + s;  // flat (b, s) row index
    if (tid == 0) {
      T acc = 0, prev = 0;
      for (int r = 0; r < TTR_TILE; ++r) {
        if (r < n) acc += log_a[base + r];
        lg[r] = acc;
        lr[r] = read_after ? acc : prev;
        prev = acc;
        wv[r] = r < n ? w[base + r] : T(0);
      }
      for (int r = 0; r < TTR_TILE; ++r) coef[r] = wv[r] * exp_(acc - lg[r]);
    }
    Vs[ti][tj] = (ti < n && c0 + tj < dv) ? v[(base + ti) * dv + c0 + tj] : T(0);

    // (lg, lr, wv, coef and Vs are published by the first barrier below: dk >= 1)
    T dot = 0;
    for (int j0 = 0; j0 < dk; j0 += TTR_DK) {
      for (int e = tid; e < TTR_TILE * TTR_DK; e += TTR_THREADS) {
        const int rr = e / TTR_DK, cc = e % TTR_DK, jj = j0 + cc;
        const bool in = rr < n && jj < dk;
        qs[rr][cc] = in ? q[(base + rr) * dk + jj] : T(0);
        ks[rr][cc] = in ? k[(base + rr) * dk + jj] : T(0);
      }
      __syncthreads();
#pragma unroll 8
      for (int cc = 0; cc < TTR_DK; ++cc) dot += qs[ti][cc] * ks[tj][cc];
      __syncthreads();  // the next feature block overwrites qs / ks
    }
    const bool ok = read_after ? tj <= ti : tj < ti;
    A[ti][tj] = ok ? dot * wv[tj] * exp_(lr[ti] - lg[tj]) : T(0);
    __syncthreads();

    if (ti < n && c0 + tj < dv) {
      T acc = 0;
      for (int i = 0; i < TTR_TILE; ++i) acc += A[ti][i] * Vs[i][tj];
      const T* Mrow = M + (b * dv + c0 + tj) * dk;
      const T* qt = q + (base + ti) * dk;
      T mq = 0;
      for (int j = 0; j < dk; ++j) mq += Mrow[j] * qt[j];
      o[(base + ti) * dv + c0 + tj] = acc + exp_(lr[ti]) * mq;
    }
    __syncthreads();  // every read of the entry state precedes its update

    // M_out = e^{lg_{C-1}} M + sum_i coef_i v_i k_i^T
    update_state_tile(M, k, b, c0, dv, dk, base, n, exp_(lg[TTR_TILE - 1]),
                      [&](int i, int c) { return coef[i] * Vs[i][c]; });
    __syncthreads();  // the next chunk overwrites lg, coef, Vs
  }
}

}  // namespace ttr

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_linear_attention_chunk_f32(
    const float* __restrict__ q, const float* __restrict__ k,
    const float* __restrict__ v, const float* __restrict__ log_a,
    const float* __restrict__ w, float* __restrict__ M, float* __restrict__ o,
    int n_steps, int dk, int dv, int read_after) {
  ttr::linear_attention_chunk<float>(q, k, v, log_a, w, M, o, n_steps, dk, dv,
                                     read_after);
}

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_linear_attention_chunk_f64(
    const double* __restrict__ q, const double* __restrict__ k,
    const double* __restrict__ v, const double* __restrict__ log_a,
    const double* __restrict__ w, double* __restrict__ M, double* __restrict__ o,
    int n_steps, int dk, int dv, int read_after) {
  ttr::linear_attention_chunk<double>(q, k, v, log_a, w, M, o, n_steps, dk, dv,
                                      read_after);
}
