// gated_delta.cu -- fused recurrent gated delta rule over B independent streams.
//
// Recurrence, per stream b and step t (state M of shape (d_v, d_k), readout M q):
//     M <- a_t M;   e = v_t - M k_t;   M <- M + beta_t e k_t^T;   o_t = M q_t
// With read_after == 0, o_t = M_{t-1} q_t is read before the write of pair t
// (before its decay too).
//
// Shapes (row-major, contiguous):
//     q, k (B, T, d_k)   v (B, T, d_v)   a, beta (B, T)
//     The decays a_t = e^{log a_t} are rounded to T once, by the launcher, from
//     float64 log-decays. Each step multiplies the state by a_t, so over a long
//     call the rounding of a constant gate adds up (up to T * 2^-25 relatively
//     in float32, as in any per-step float32 recurrence); gated_delta_chunk.cu
//     sums the log-decays in double and rounds once per 16 rows.
//     M (B, d_v, d_k), read on entry and overwritten with the final state
//     o (B, T, d_v)
// Launch geometry:
//     At most 65535 streams per launch (B is gridDim.y); the launchers run
//     larger batches in slices, on pointers offset to each slice's start.
//     grid  = (ceil(d_v / R), B, 1), block = (R, 1, 1): one thread per row of M
//     dynamic shared memory = (R * d_k + 2 * d_k) * sizeof(T): the block's R
//     state rows, stored column-major (S[j * R + r], conflict-free), plus k_t
//     and q_t staged for all rows. R is chosen by the launcher (<= 128).
//     Two __syncthreads per step; no inter-block communication.
// Entry points:
//     ttr_gated_delta_recurrent_f32, ttr_gated_delta_recurrent_f64
#include "common.cuh"

namespace ttr {

template <typename T>
__device__ __forceinline__ void gated_delta_recurrent(
    const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
    const T* __restrict__ a, const T* __restrict__ beta, T* __restrict__ M,
    T* __restrict__ o, int n_steps, int dk, int dv, int read_after) {
  TTR_DYNAMIC_SHARED(T, smem);
  const int R = blockDim.x;
  const int r = threadIdx.x;
  const i64 b = blockIdx.y;
  const int row = blockIdx.x * R + r;
  const bool live = row < dv;
  T* S = smem;           // (d_k, R)
  T* ks = smem + dk * R;  // (d_k)
  T* qs = ks + dk;        // (d_k)

  const T* Mrow = M + (b * dv + row) * dk;
  for (int j = 0; j < dk; ++j) S[j * R + r] = live ? Mrow[j] : T(0);

  for (int t = 0; t < n_steps; ++t) {
    const i64 bt = b * n_steps + t;
    for (int j = r; j < dk; j += R) {
      ks[j] = k[bt * dk + j];
      qs[j] = q[bt * dk + j];
    }
    __syncthreads();
    if (live) {
      const T at = a[bt];
      const T bet = beta[bt];
      if (!read_after) {
        T acc = 0;
        for (int j = 0; j < dk; ++j) acc += S[j * R + r] * qs[j];
        o[bt * dv + row] = acc;
      }
      T mk = 0;
      for (int j = 0; j < dk; ++j) {
        const T s = at * S[j * R + r];
        S[j * R + r] = s;
        mk += s * ks[j];
      }
      const T e = bet * (v[bt * dv + row] - mk);
      T acc = 0;
      for (int j = 0; j < dk; ++j) {
        const T s = S[j * R + r] + e * ks[j];
        S[j * R + r] = s;
        acc += s * qs[j];
      }
      if (read_after) o[bt * dv + row] = acc;
    }
    __syncthreads();  // ks / qs are overwritten by the next step
  }
  if (live) {
    T* Mw = M + (b * dv + row) * dk;
    for (int j = 0; j < dk; ++j) Mw[j] = S[j * R + r];
  }
}

}  // namespace ttr

extern "C" __global__ void __launch_bounds__(128) ttr_gated_delta_recurrent_f32(
    const float* __restrict__ q, const float* __restrict__ k,
    const float* __restrict__ v, const float* __restrict__ a,
    const float* __restrict__ beta, float* __restrict__ M, float* __restrict__ o,
    int n_steps, int dk, int dv, int read_after) {
  ttr::gated_delta_recurrent<float>(q, k, v, a, beta, M, o, n_steps, dk, dv,
                                    read_after);
}

extern "C" __global__ void __launch_bounds__(128) ttr_gated_delta_recurrent_f64(
    const double* __restrict__ q, const double* __restrict__ k,
    const double* __restrict__ v, const double* __restrict__ a,
    const double* __restrict__ beta, double* __restrict__ M,
    double* __restrict__ o, int n_steps, int dk, int dv, int read_after) {
  ttr::gated_delta_recurrent<double>(q, k, v, a, beta, M, o, n_steps, dk, dv,
                                     read_after);
}
