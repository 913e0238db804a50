// Thread-count resolution and OpenMP helpers: exceptions thrown inside a
// parallel region are captured and rethrown after it (never std::terminate),
// and chunking is fixed so reductions are bit-identical across thread counts.
#pragma once
#include <cstdint>
#include <exception>
#include <mutex>

namespace stemroi {

// n_threads <= 0 means "all available" (OMP_NUM_THREADS, affinity and cgroup
// quota respected); otherwise n_threads itself.
int resolve_n_threads(int n_threads);

// Fixed chunk size for deterministic reductions: work is split into chunks of
// this many items whatever the thread count, and chunk partials are combined
// in chunk order.
constexpr int64_t kReduceChunk = 256;

class OmpExceptionCapture {
 public:
  template <typename F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!ptr_) ptr_ = std::current_exception();
    }
  }
  bool failed() const { return static_cast<bool>(ptr_); }
  void rethrow() {
    if (ptr_) std::rethrow_exception(ptr_);
  }

 private:
  std::exception_ptr ptr_;
  std::mutex mutex_;
};

// RAII: sets LibTorch's intra-op thread count for a call and restores it
// (Debian's torch defaults to one thread); touches nothing when the count is
// already the one wanted.
class TorchThreadsGuard {
 public:
  explicit TorchThreadsGuard(int n_threads);
  ~TorchThreadsGuard();
  TorchThreadsGuard(const TorchThreadsGuard&) = delete;
  TorchThreadsGuard& operator=(const TorchThreadsGuard&) = delete;

 private:
  int previous_;
  bool changed_ = false;
};

}  // namespace stemroi
