// kernel_regression.cu -- flash-style online-softmax recall (Nadaraya-Watson)
// and the weighted moments of local-linear (order 1) kernel regression.
//
// For stream b, query m and stored pair i the log-weight is
//     l_mi = lw_i + log kappa_h(q_m, k_i),   kernel selects log kappa_h:
//       0 softmax       q.k / h
//       1 gaussian      -|q - k|^2 / (2 h^2)
//       2 laplacian     -|q - k| / h
//       3 epanechnikov  log max(0, 1 - |q - k|^2 / h^2)   (-inf outside)
// and l_mi = -inf where the causal mask rejects the pair: mask 1 keeps
// kpos_i <= qpos_m ("after"), mask 2 keeps kpos_i < qpos_m ("before"),
// mask 0 keeps all; window > 0 also requires kpos_i > qpos_m - window.
// Keys are visited 16 at a time with a running maximum mx_m (online softmax):
// no (queries x keys) matrix larger than a 16 x 16 tile is ever formed.
//
// ttr_kernel_regression_recall_*:
//     out_m = sum_i softmax_i(l_mi) v_i, and 0 where every weight is zero.
// ttr_kernel_regression_moments_*: with p_mi = exp(l_mi - mx_m), d = k_i - q_m,
//     mom[b, m] = [ sum p | sum p d | sum p d d^T | sum p v | sum p v d^T ]
//     (length L = 1 + d_k + d_k^2 + d_v + d_v d_k, row-major blocks) and
//     mshift[b, m] = mx_m (-inf and all-zero moments where no pair has weight);
//     the d_k x d_k solve of order 1 is left to the caller.
//
// Shapes (row-major, contiguous):
//     Ks (B, N, d_k)   Vs (B, N, d_v)   lw (B, N)   Q (B, M, d_k)
//     kpos (B, N), qpos (B, M) int64 (not read when mask == 0)
//     out (B, M, d_v);  mom (B, M, L), mshift (B, M)
// Launch geometry (block = (256, 1, 1), no dynamic shared memory):
//     At most 65535 streams per launch (B is gridDim.z); the launchers run
//     larger batches in slices, on pointers offset to each slice's start.
//     recall : grid = (ceil(M / 16), ceil(d_v / 16), B); thread (r, c) owns
//              query q0 + r and value column c0 + c (accumulator in a register)
//     moments: grid = (ceil(M / 16), 1, B); the 16 threads of query r stride
//              over its L moments (accumulated in place in mom)
//     In both, thread (r, c) first forms logit l(q0 + r, k0 + c) of the tile,
//     from Q and K staged 32 features at a time in shared memory.
// Entry points:
//     ttr_kernel_regression_recall_f32,  ttr_kernel_regression_recall_f64
//     ttr_kernel_regression_moments_f32, ttr_kernel_regression_moments_f64
#include "common.cuh"

namespace ttr {

// Tile of masked logits: S[r][c] = l(q0 + r, k0 + c), -inf outside the data.
// Called by every thread of the block; ends with a barrier.
template <typename T>
__device__ __forceinline__ void kr_logits(
    const T* __restrict__ Ks, const T* __restrict__ lw, const T* __restrict__ Q,
    const i64* __restrict__ kpos, const i64* __restrict__ qpos, i64 b, int q0,
    int k0, int N, int Mq, int dk, int kernel, T h, int mask, i64 window,
    T (*qs)[TTR_DK + 1], T (*ks)[TTR_DK + 1], T (*S)[TTR_TILE + 1]) {
  const int tid = threadIdx.x;
  const int r = tid / TTR_TILE, c = tid % TTR_TILE;
  const int nq = min_(TTR_TILE, Mq - q0), nk = min_(TTR_TILE, N - k0);
  T acc = 0;
  for (int j0 = 0; j0 < dk; j0 += TTR_DK) {
    for (int e = tid; e < TTR_TILE * TTR_DK; e += TTR_THREADS) {
      const int rr = e / TTR_DK, cc = e % TTR_DK, jj = j0 + cc;
      qs[rr][cc] = (rr < nq && jj < dk) ? Q[(b * Mq + q0 + rr) * dk + jj] : T(0);
      ks[rr][cc] = (rr < nk && jj < dk) ? Ks[(b * N + k0 + rr) * dk + jj] : T(0);
    }
    __syncthreads();
    if (kernel == 0) {
      for (int cc = 0; cc < TTR_DK; ++cc) acc += qs[r][cc] * ks[c][cc];
    } else {
      for (int cc = 0; cc < TTR_DK; ++cc) {
        const T d = qs[r][cc] - ks[c][cc];
        acc += d * d;
      }
    }
    __syncthreads();  // the next feature block overwrites qs / ks
  }
  T logit = neg_inf<T>();
  if (r < nq && c < nk) {
    bool ok = true;
    if (mask != 0) {
      const i64 kp = kpos[b * N + k0 + c], qp = qpos[b * Mq + q0 + r];
      ok = mask == 1 ? kp <= qp : kp < qp;
      if (window > 0) ok = ok && kp > qp - window;
    }
    if (ok) {
      T lk;
      if (kernel == 0) {
        lk = acc / h;
      } else if (kernel == 1) {
        lk = -acc / (T(2) * h * h);
      } else if (kernel == 2) {
        lk = -sqrt_(acc) / h;
      } else {
        const T u2 = acc / (h * h);
        lk = u2 < T(1) ? log_(T(1) - u2) : neg_inf<T>();
      }
      logit = lw[b * N + k0 + c] + lk;
    }
  }
  S[r][c] = logit;
  __syncthreads();
}

// Online-softmax step: threads r < 16 fold tile row r into the running maximum
// mx[r] and total lsum[r], replace S[r][:] by p = exp(l - mx) and publish the
// rescaling factor corr[r] of the earlier accumulators. Ends with a barrier.
template <typename T>
__device__ __forceinline__ void kr_online(T (*S)[TTR_TILE + 1], T* mx, T* lsum,
                                          T* corr) {
  const int r = threadIdx.x;
  if (r < TTR_TILE) {
    T mt = neg_inf<T>();
    for (int c = 0; c < TTR_TILE; ++c) mt = max_(mt, S[r][c]);
    const T mnew = max_(mx[r], mt);
    if (mnew == neg_inf<T>()) {  // nothing admissible yet: all stays zero
      corr[r] = T(1);
      for (int c = 0; c < TTR_TILE; ++c) S[r][c] = T(0);
    } else {
      const T cr = exp_(mx[r] - mnew);  // exp(-inf) = 0 on the first hit
      T sum = 0;
      for (int c = 0; c < TTR_TILE; ++c) {
        const T p = exp_(S[r][c] - mnew);
        S[r][c] = p;
        sum += p;
      }
      lsum[r] = lsum[r] * cr + sum;
      mx[r] = mnew;
      corr[r] = cr;
    }
  }
  __syncthreads();
}

template <typename T>
__device__ __forceinline__ void kr_recall(
    const T* __restrict__ Ks, const T* __restrict__ Vs, const T* __restrict__ lw,
    const T* __restrict__ Q, const i64* __restrict__ kpos,
    const i64* __restrict__ qpos, T* __restrict__ out, int N, int Mq, int dk,
    int dv, int kernel, T h, int mask, i64 window) {
  __shared__ T qs[TTR_TILE][TTR_DK + 1];
  __shared__ T ks[TTR_TILE][TTR_DK + 1];
  __shared__ T S[TTR_TILE][TTR_TILE + 1];
  __shared__ T mx[TTR_TILE], lsum[TTR_TILE], corr[TTR_TILE];
  const int tid = threadIdx.x;
  const int r = tid / TTR_TILE, c = tid % TTR_TILE;
  const i64 b = blockIdx.z;
  const int q0 = blockIdx.x * TTR_TILE, c0 = blockIdx.y * TTR_TILE;
  if (tid < TTR_TILE) {
    mx[tid] = neg_inf<T>();
    lsum[tid] = T(0);
  }
  __syncthreads();
  T acc = 0;
  for (int k0 = 0; k0 < N; k0 += TTR_TILE) {
    kr_logits<T>(Ks, lw, Q, kpos, qpos, b, q0, k0, N, Mq, dk, kernel, h, mask,
                 window, qs, ks, S);
    kr_online<T>(S, mx, lsum, corr);
    if (c0 + c < dv) {
      const int nk = min_(TTR_TILE, N - k0);
      acc *= corr[r];
      for (int i = 0; i < nk; ++i) acc += S[r][i] * Vs[(b * N + k0 + i) * dv + c0 + c];
    }
    __syncthreads();  // S is rewritten by the next key tile
  }
  if (q0 + r < Mq && c0 + c < dv) {
    out[(b * Mq + q0 + r) * dv + c0 + c] = lsum[r] > T(0) ? acc / lsum[r] : T(0);
  }
}

template <typename T>
__device__ __forceinline__ void kr_moments(
    const T* __restrict__ Ks, const T* __restrict__ Vs, const T* __restrict__ lw,
    const T* __restrict__ Q, const i64* __restrict__ kpos,
    const i64* __restrict__ qpos, T* __restrict__ mom, T* __restrict__ mshift,
    int N, int Mq, int dk, int dv, int kernel, T h, int mask, i64 window) {
  __shared__ T qs[TTR_TILE][TTR_DK + 1];
  __shared__ T ks[TTR_TILE][TTR_DK + 1];
  __shared__ T S[TTR_TILE][TTR_TILE + 1];
  __shared__ T mx[TTR_TILE], lsum[TTR_TILE], corr[TTR_TILE];
  const int tid = threadIdx.x;
  const int r = tid / TTR_TILE, lane = tid % TTR_TILE;
  const i64 b = blockIdx.z;
  const int q0 = blockIdx.x * TTR_TILE;
  const int qi = q0 + r;
  const bool live = qi < Mq;
  const i64 L = 1 + dk + (i64)dk * dk + dv + (i64)dv * dk;
  T* mq = mom + (b * Mq + qi) * L;  // this query's moments (owned by 16 threads)
  const T* qv = Q + (b * Mq + qi) * dk;
  if (tid < TTR_TILE) {
    mx[tid] = neg_inf<T>();
    lsum[tid] = T(0);
  }
  if (live) {
    for (i64 e = lane; e < L; e += TTR_TILE) mq[e] = T(0);
  }
  __syncthreads();
  for (int k0 = 0; k0 < N; k0 += TTR_TILE) {
    kr_logits<T>(Ks, lw, Q, kpos, qpos, b, q0, k0, N, Mq, dk, kernel, h, mask,
                 window, qs, ks, S);
    kr_online<T>(S, mx, lsum, corr);
    if (live) {
      const int nk = min_(TTR_TILE, N - k0);
      const T cr = corr[r];
      for (i64 e = lane; e < L; e += TTR_TILE) {
        T val = mq[e] * cr;
        for (int i = 0; i < nk; ++i) {
          const T p = S[r][i];
          if (p == T(0)) continue;
          const T* kv = Ks + (b * N + k0 + i) * dk;
          const T* vv = Vs + (b * N + k0 + i) * dv;
          i64 f = e;
          T x;
          if (f == 0) {
            x = T(1);
          } else if ((f -= 1) < dk) {
            x = kv[f] - qv[f];
          } else if ((f -= dk) < (i64)dk * dk) {
            const int u = (int)(f / dk), z = (int)(f % dk);
            x = (kv[u] - qv[u]) * (kv[z] - qv[z]);
          } else if ((f -= (i64)dk * dk) < dv) {
            x = vv[f];
          } else {
            f -= dv;
            const int u = (int)(f / dk), z = (int)(f % dk);
            x = vv[u] * (kv[z] - qv[z]);
          }
          val += p * x;
        }
        mq[e] = val;
      }
    }
    __syncthreads();  // S is rewritten by the next key tile
  }
  if (live && lane == 0) mshift[b * Mq + qi] = mx[r];
}

}  // namespace ttr

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_kernel_regression_recall_f32(
    const float* __restrict__ Ks, const float* __restrict__ Vs,
    const float* __restrict__ lw, const float* __restrict__ Q,
    const long long* __restrict__ kpos, const long long* __restrict__ qpos,
    float* __restrict__ out, int N, int Mq, int dk, int dv, int kernel, float h,
    int mask, long long window) {
  ttr::kr_recall<float>(Ks, Vs, lw, Q, kpos, qpos, out, N, Mq, dk, dv, kernel, h,
                        mask, window);
}

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_kernel_regression_recall_f64(
    const double* __restrict__ Ks, const double* __restrict__ Vs,
    const double* __restrict__ lw, const double* __restrict__ Q,
    const long long* __restrict__ kpos, const long long* __restrict__ qpos,
    double* __restrict__ out, int N, int Mq, int dk, int dv, int kernel, double h,
    int mask, long long window) {
  ttr::kr_recall<double>(Ks, Vs, lw, Q, kpos, qpos, out, N, Mq, dk, dv, kernel, h,
                         mask, window);
}

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_kernel_regression_moments_f32(
    const float* __restrict__ Ks, const float* __restrict__ Vs,
    const float* __restrict__ lw, const float* __restrict__ Q,
    const long long* __restrict__ kpos, const long long* __restrict__ qpos,
    float* __restrict__ mom, float* __restrict__ mshift, int N, int Mq, int dk,
    int dv, int kernel, float h, int mask, long long window) {
  ttr::kr_moments<float>(Ks, Vs, lw, Q, kpos, qpos, mom, mshift, N, Mq, dk, dv,
                         kernel, h, mask, window);
}

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_kernel_regression_moments_f64(
    const double* __restrict__ Ks, const double* __restrict__ Vs,
    const double* __restrict__ lw, const double* __restrict__ Q,
    const long long* __restrict__ kpos, const long long* __restrict__ qpos,
    double* __restrict__ mom, double* __restrict__ mshift, int N, int Mq, int dk,
    int dv, int kernel, double h, int mask, long long window) {
  ttr::kr_moments<double>(Ks, Vs, lw, Q, kpos, qpos, mom, mshift, N, Mq, dk, dv,
                          kernel, h, mask, window);
}
