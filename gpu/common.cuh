// common.cuh -- helpers shared by every ttrlearn CUDA source.
//
// The .cu files are compiled three ways from the same text:
//   * by NVRTC at run time, through ttrlearn.gpu._loader (CuPy RawModule; the
//     loader inlines this header, so CuPy's cache key covers it);
//   * by nvcc -cubin in the test suite (sm_75 / sm_80 / sm_90, resource usage);
//   * by g++ through the host shim in tests/gpu/shim (TTR_HOST_SHIM defined,
//     every CUDA thread a std::thread).
// This header is the only place that tests TTR_HOST_SHIM.
//
// No standard headers are included: NVRTC offers none without extra paths.
#pragma once

#define TTR_THREADS 256  // block size of the tiled kernels (16 x 16)
#define TTR_TILE 16      // rows per chunk / queries, keys, value columns per tile
#define TTR_DK 32        // feature columns staged in shared memory per step

#ifdef TTR_HOST_SHIM
#define TTR_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::ttr_shim::dynamic_shared())
#else
// One untyped extern array for every instantiation (float and double kernels
// must not declare the same extern __shared__ symbol with two types).
#define TTR_DYNAMIC_SHARED(T, name)                      \
  extern __shared__ double ttr_dynamic_shared_[];        \
  T* name = reinterpret_cast<T*>(ttr_dynamic_shared_)
#endif

namespace ttr {

typedef long long i64;

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }

template <typename T>
__device__ __forceinline__ T neg_inf();
template <>
__device__ __forceinline__ float neg_inf<float>() {
  return -__int_as_float(0x7f800000);
}
template <>
__device__ __forceinline__ double neg_inf<double>() {
  return -__longlong_as_double(0x7ff0000000000000LL);
}

template <typename T>
__device__ __forceinline__ T max_(T a, T b) { return a > b ? a : b; }

__device__ __forceinline__ int min_(int a, int b) { return a < b ? a : b; }

// The state update that ends a chunk of the chunk kernels (linear_attention.cu,
// gated_delta_chunk.cu), for the block that owns value rows c0 .. c0 + TTR_TILE - 1
// of stream b's state M (d_v, d_k) and the chunk's n key rows k[row0 + i]:
//     M[c0 + c][j] = decay * M[c0 + c][j] + sum_{i < n} u(i, c) k[row0 + i][j]
// for c0 + c < d_v and every feature j, the TTR_TILE * d_k elements spread over
// the block's TTR_THREADS threads. u(i, c) is the chunk's coefficient of key row
// i in value row c (read from shared memory). No barrier.
template <typename T, typename U>
__device__ __forceinline__ void update_state_tile(T* __restrict__ M,
                                                  const T* __restrict__ k, i64 b,
                                                  int c0, int dv, int dk, i64 row0,
                                                  int n, T decay, U u) {
  for (int e = threadIdx.x; e < TTR_TILE * dk; e += TTR_THREADS) {
    const int c = e / dk, j = e % dk;
    if (c0 + c < dv) {
      T* m = M + (b * dv + c0 + c) * dk + j;
      T acc = decay * *m;
      for (int i = 0; i < n; ++i) acc += u(i, c) * k[(row0 + i) * dk + j];
      *m = acc;
    }
  }
}

}  // namespace ttr
