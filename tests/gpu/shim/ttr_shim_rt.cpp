// ttr_shim_rt.cpp -- launch runtime of the host shim (see ttr_shim.h).
// Compiled once per sanitizer setting and linked into every kernel library.
#include "ttr_shim.h"

#include <barrier>
#include <condition_variable>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

thread_local uint3 threadIdx{0, 0, 0};
thread_local uint3 blockIdx{0, 0, 0};
thread_local dim3 blockDim;
thread_local dim3 gridDim;

// Bounds of this library's __shared__ statics (defined by the linker).
extern "C" {
extern char __start_ttr_shared[] __attribute__((weak, visibility("hidden")));
extern char __stop_ttr_shared[] __attribute__((weak, visibility("hidden")));
}

namespace ttr_shim {
namespace {

struct Ctx;

struct SyncDone {
  Ctx* ctx;
  void operator()() noexcept;
};

struct EndDone {
  Ctx* ctx;
  void operator()() noexcept;
};

struct Ctx {
  unsigned n = 0;                  // threads per block
  std::vector<unsigned> blocks;    // linear block ids this launch runs
  size_t bi = 0;                   // index of the running block
  std::vector<const char*> file;   // per thread: barrier call site
  std::vector<int> line;
  std::vector<char> done;          // per thread: returned from the kernel
  std::unique_ptr<std::barrier<SyncDone>> sync;
  std::unique_ptr<std::barrier<EndDone>> end;
  std::vector<unsigned char> dyn;  // dynamic shared memory of the block
  std::mutex mu;
  std::string error;               // first error of the launch

  void fail(const std::string& msg) {
    std::lock_guard<std::mutex> g(mu);
    if (error.empty()) error = msg;
  }
  void poison() {
    if (__start_ttr_shared != nullptr && __stop_ttr_shared != nullptr)
      std::memset(__start_ttr_shared, 0xFF, __stop_ttr_shared - __start_ttr_shared);
    if (!dyn.empty()) std::memset(dyn.data(), 0xFF, dyn.size());
  }
};

thread_local Ctx* tl_ctx = nullptr;
thread_local unsigned tl_tid = 0;

void SyncDone::operator()() noexcept {
  const char* f0 = nullptr;
  int l0 = 0;
  for (unsigned t = 0; t < ctx->n; ++t) {
    if (ctx->done[t]) continue;
    if (f0 == nullptr) {
      f0 = ctx->file[t];
      l0 = ctx->line[t];
    } else if (ctx->line[t] != l0 || std::strcmp(ctx->file[t], f0) != 0) {
      ctx->fail("divergent __syncthreads(): threads of block " +
                std::to_string(ctx->blocks[ctx->bi]) + " wait at " + f0 + ":" +
                std::to_string(l0) + " and at " + ctx->file[t] + ":" +
                std::to_string(ctx->line[t]));
      return;
    }
  }
}

void EndDone::operator()() noexcept {
  // every thread has left the kernel body and dropped out of `sync`
  ctx->sync = std::make_unique<std::barrier<SyncDone>>(ctx->n, SyncDone{ctx});
  std::fill(ctx->done.begin(), ctx->done.end(), 0);
  ++ctx->bi;
  ctx->poison();
}

uint3 unflatten(unsigned long long i, const unsigned* d) {
  return uint3{static_cast<unsigned>(i % d[0]), static_cast<unsigned>((i / d[0]) % d[1]),
               static_cast<unsigned>(i / (static_cast<unsigned long long>(d[0]) * d[1]))};
}

// Threads are created once per library copy and reused by every launch
// (creating 256 threads per launch dominated the run time under TSan).
class Pool {
 public:
  ~Pool() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    work_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // Runs job(0) ... job(n - 1), one per pool thread, and waits for all.
  void run(unsigned n, const std::function<void(unsigned)>& job) {
    std::lock_guard<std::mutex> one_launch_at_a_time(launch_mu_);
    std::unique_lock<std::mutex> lk(mu_);
    while (threads_.size() < n) {
      const unsigned id = static_cast<unsigned>(threads_.size());
      threads_.emplace_back([this, id, g = gen_] { loop(id, g); });
    }
    job_ = &job;
    active_ = remaining_ = n;
    ++gen_;
    work_.notify_all();
    done_.wait(lk, [this] { return remaining_ == 0; });
    job_ = nullptr;
  }

 private:
  void loop(unsigned id, unsigned long long seen) {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      work_.wait(lk, [&] { return stop_ || gen_ != seen; });
      if (stop_) return;
      seen = gen_;
      if (id >= active_) continue;
      const auto* job = job_;
      lk.unlock();
      (*job)(id);
      lk.lock();
      if (--remaining_ == 0) done_.notify_all();
    }
  }

  std::mutex launch_mu_, mu_;
  std::condition_variable work_, done_;
  std::vector<std::thread> threads_;
  const std::function<void(unsigned)>* job_ = nullptr;
  unsigned long long gen_ = 0;
  unsigned active_ = 0, remaining_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

}  // namespace

void syncthreads(const char* file, int line) {
  Ctx* c = tl_ctx;
  c->file[tl_tid] = file;
  c->line[tl_tid] = line;
  c->sync->arrive_and_wait();
}

void* dynamic_shared() { return tl_ctx->dyn.empty() ? nullptr : tl_ctx->dyn.data(); }

int launch(Launch* L, const char* name, void (*body)(void**), void** args) {
  L->err[0] = '\0';
  auto bad = [&](const std::string& m) {
    std::snprintf(L->err, sizeof L->err, "%s: %s", name, m.c_str());
    return 1;
  };
  const unsigned* g = L->grid;
  const unsigned* b = L->block;
  const unsigned long long nthreads = 1ULL * b[0] * b[1] * b[2];
  if (!g[0] || !g[1] || !g[2] || !b[0] || !b[1] || !b[2] || nthreads > 1024 || b[2] > 64 ||
      g[1] > 65535 || g[2] > 65535 || g[0] > 2147483647u)
    return bad("invalid configuration argument (cudaErrorInvalidConfiguration): grid=(" +
               std::to_string(g[0]) + "," + std::to_string(g[1]) + "," +
               std::to_string(g[2]) + ") block=(" + std::to_string(b[0]) + "," +
               std::to_string(b[1]) + "," + std::to_string(b[2]) + ")");
  if (L->shared_mem > 48 * 1024)
    return bad("too much dynamic shared memory: " + std::to_string(L->shared_mem) +
               " > 49152");
  if (L->block_stride == 0) return bad("block_stride must be >= 1");
  Ctx ctx;
  ctx.n = static_cast<unsigned>(nthreads);
  const unsigned long long nblocks = 1ULL * g[0] * g[1] * g[2];
  for (unsigned long long i = L->block_offset; i < nblocks; i += L->block_stride)
    ctx.blocks.push_back(static_cast<unsigned>(i));
  if (ctx.blocks.empty()) return 0;
  ctx.file.assign(ctx.n, nullptr);
  ctx.line.assign(ctx.n, 0);
  ctx.done.assign(ctx.n, 0);
  ctx.dyn.assign(L->shared_mem, 0xFF);
  ctx.sync = std::make_unique<std::barrier<SyncDone>>(ctx.n, SyncDone{&ctx});
  ctx.end = std::make_unique<std::barrier<EndDone>>(ctx.n, EndDone{&ctx});
  ctx.poison();
  const dim3 bd{b[0], b[1], b[2]}, gd{g[0], g[1], g[2]};
  const std::function<void(unsigned)> worker = [&](unsigned tid) {
    tl_ctx = &ctx;
    tl_tid = tid;
    threadIdx = unflatten(tid, b);
    blockDim = bd;
    gridDim = gd;
    while (ctx.bi < ctx.blocks.size()) {  // bi only changes inside `end`
      blockIdx = unflatten(ctx.blocks[ctx.bi], g);
      try {
        body(args);
      } catch (const std::exception& e) {
        ctx.fail(e.what());
      } catch (...) {
        ctx.fail("unknown C++ exception in kernel");
      }
      ctx.done[tid] = 1;
      ctx.sync->arrive_and_drop();
      ctx.end->arrive_and_wait();
    }
    tl_ctx = nullptr;
  };
  try {
    pool().run(ctx.n, worker);
  } catch (const std::exception& e) {
    // threads already started wait for the missing ones: cannot recover
    std::fprintf(stderr, "ttr_shim: thread creation failed: %s\n", e.what());
    std::abort();
  }
  if (!ctx.error.empty()) return bad(ctx.error);
  return 0;
}

}  // namespace ttr_shim
