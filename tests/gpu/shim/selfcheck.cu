// selfcheck.cu -- kernels with planted bugs (and one correct one) proving that
// the host shim and its sanitizer runs catch what they claim to catch.
// Tests only; see tests/gpu/test_shim.py and test_sanitizers.py.

// Correct: threads >= n return before the barrier (they drop out of it, as on
// hardware); the rest sum x through shared memory.
extern "C" __global__ void ttr_selfcheck_early_return(const float* x, float* out, int n) {
  __shared__ float buf[64];
  const int t = threadIdx.x;
  if (t >= n) return;
  buf[t] = x[blockIdx.x * n + t];
  __syncthreads();
  if (t == 0) {
    float s = 0;
    for (int i = 0; i < n; ++i) s += buf[i];
    out[blockIdx.x] = s;
  }
}

// Bug: threads of one block wait at two different barriers.
extern "C" __global__ void ttr_selfcheck_divergent(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

// Bug: shared memory read before anyone wrote it (poisoned to NaN).
extern "C" __global__ void ttr_selfcheck_uninit_shared(float* out) {
  __shared__ float buf[32];
  if (threadIdx.x < 16) buf[threadIdx.x] = 1.0f;
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[threadIdx.x];
}

// Bug: non-atomic read-modify-write of one global cell by every block
// (invisible to GPU racecheck, which sees shared memory only).
extern "C" __global__ void ttr_selfcheck_racy_sum(const float* x, float* out) {
  if (threadIdx.x == 0) {
    for (int i = 0; i < 1000; ++i) out[0] += x[blockIdx.x];
  }
}

// Bug: reads one element past the end of x.
extern "C" __global__ void ttr_selfcheck_oob(const float* x, float* out, int n) {
  const int i = threadIdx.x;
  if (i <= n) out[0 * n] = x[i];
}
