// rls.cu -- the piece of the chunked RLS (Woodbury) read that is not a GEMM.
//
// Within a chunk of C rows the causal outputs are (see
// ttrlearn/kernels/numpy/rls.py::rls_update_read)
//     O = base + triu(R)^T E      (read_after = 1: pairs i <= t)
//     O = base + triu(R, 1)^T E   (read_after = 0: pairs i < t)
// that is, per stream b, row t and output column c,
//     O[b, t, c] = base[b, t, c] + sum_{i in I_t} R[b, i, t] E[b, i, c],
// where base = Q M0^T, R and E come from triangular solves and GEMMs that
// cuBLAS / cuSOLVER (through CuPy) do. Fusing the mask into the product avoids
// materialising the masked copy of R.
//
// Shapes (row-major, contiguous):
//     base (B, C, d_v)   R (B, C, C)   E (B, C, d_v)   O (B, C, d_v)
//     (O may alias base: each element is read, then written, by one thread)
// Launch geometry:
//     At most 65535 streams per launch (B is gridDim.y); the launchers run
//     larger batches in slices, on pointers offset to each slice's start.
//     grid = (ceil(C * d_v / 256), B, 1), block = (256, 1, 1), one thread per
//     output element, no shared memory.
// Entry points:
//     ttr_rls_masked_combine_f32, ttr_rls_masked_combine_f64
#include "common.cuh"

namespace ttr {

template <typename T>
__device__ __forceinline__ void rls_masked_combine(const T* base, const T* R,
                                                   const T* E, T* O, int C,
                                                   int dv, int read_after) {
  const i64 b = blockIdx.y;
  const i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= (i64)C * dv) return;
  const int t = (int)(idx / dv), c = (int)(idx % dv);
  const int hi = read_after ? t + 1 : t;
  const T* Rb = R + b * C * C;
  const T* Eb = E + b * C * dv;
  T acc = base[b * C * dv + idx];
  for (int i = 0; i < hi; ++i) acc += Rb[(i64)i * C + t] * Eb[(i64)i * dv + c];
  O[b * C * dv + idx] = acc;
}

}  // namespace ttr

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_rls_masked_combine_f32(
    const float* base, const float* __restrict__ R, const float* __restrict__ E,
    float* O, int C, int dv, int read_after) {
  ttr::rls_masked_combine<float>(base, R, E, O, C, dv, read_after);
}

extern "C" __global__ void __launch_bounds__(TTR_THREADS) ttr_rls_masked_combine_f64(
    const double* base, const double* __restrict__ R, const double* __restrict__ E,
    double* O, int C, int dv, int read_after) {
  ttr::rls_masked_combine<double>(base, R, E, O, C, dv, read_after);
}
