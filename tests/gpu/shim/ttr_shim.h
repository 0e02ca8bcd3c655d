// ttr_shim.h -- run CUDA C kernels on the CPU (tests only, never shipped).
//
// Included (with TTR_HOST_SHIM defined) before a .cu file from ttrlearn/gpu,
// compiled by g++ -std=c++20 and linked with ttr_shim_rt.cpp (the launch
// runtime, compiled once) into a shared library; tests/gpu/shim/host.py builds
// it, loads it with ctypes and launches the extern "C" kernels on numpy arrays.
//
// Execution model (implemented in ttr_shim_rt.cpp):
//   * every CUDA thread of a block is a std::thread; threadIdx, blockIdx,
//     blockDim, gridDim are thread_local;
//   * the blocks of a launch run one after another on the same threads
//     (block_offset / block_stride select a subset: host.py loads K copies of
//     the library and runs their subsets at the same time, so blocks of
//     different copies run concurrently, each copy with its own __shared__);
//   * __syncthreads() is a std::barrier; a thread that returns drops out of it
//     (as on hardware); threads of one block waiting at different
//     __syncthreads() call sites is reported as an error;
//   * __shared__ variables are function statics in the ELF section ttr_shared
//     (one per loaded copy, so per concurrently running block), and the section
//     and the dynamic shared buffer are filled with 0xFF (NaN) before every
//     block, so reading shared memory nobody wrote shows up as NaN. In ASan
//     builds the section attribute is dropped so that redzones apply.
// Not modelled: warps (no shuffles or warp-synchronous code), atomics,
// registers / occupancy, FMA contraction and flush-to-zero.
#pragma once

#include <cmath>
#include <cstring>

#ifndef TTR_HOST_SHIM
#define TTR_HOST_SHIM 1
#endif

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#if defined(__SANITIZE_ADDRESS__)
#define __shared__ static
#else
#define __shared__ static __attribute__((section("ttr_shared")))
#endif

inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
inline double __longlong_as_double(long long x) {
  double d;
  std::memcpy(&d, &x, sizeof d);
  return d;
}
using std::exp;
using std::log;
using std::sqrt;
using ::expf;
using ::logf;
using ::sqrtf;

#define __syncthreads() ::ttr_shim::syncthreads(__FILE__, __LINE__)

namespace ttr_shim {

// Mirrors host.py's ctypes structure.
struct Launch {
  unsigned int grid[3];
  unsigned int block[3];
  unsigned long long shared_mem;
  unsigned int block_offset;
  unsigned int block_stride;
  char err[1024];
};

void syncthreads(const char* file, int line);
void* dynamic_shared();
int launch(Launch* L, const char* name, void (*body)(void**), void** args);

}  // namespace ttr_shim

// TTR_SHIM_EXPORT(kernel, call) defines ttr_launch__<kernel>, called by host.py.
#define TTR_SHIM_EXPORT(NAME, CALL)                                           \
  static void ttr_body__##NAME(void** args) { CALL; }                        \
  extern "C" __attribute__((visibility("default"))) int ttr_launch__##NAME( \
      ::ttr_shim::Launch* L, void** args) {                                  \
    return ::ttr_shim::launch(L, #NAME, &ttr_body__##NAME, args);            \
  }
