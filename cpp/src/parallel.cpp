#include "stemroi/parallel.hpp"
#include "stemroi/callbacks.hpp"

#include <ATen/Parallel.h>
#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <string>

namespace stemroi {

namespace {
// CPU quota of a cgroup v2 container ("max 100000" -> unlimited).
int cgroup_cpu_limit() {
  std::ifstream f("/sys/fs/cgroup/cpu.max");
  std::string quota, period;
  if (!(f >> quota >> period) || quota == "max") return 0;
  try {
    double q = std::stod(quota), p = std::stod(period);
    if (p <= 0) return 0;
    return std::max(1, static_cast<int>(q / p));
  } catch (...) {
    return 0;
  }
}
}  // namespace

int resolve_n_threads(int n_threads) {
  if (n_threads > 0) return n_threads;
  int n = 0;
  if (const char* env = std::getenv("OMP_NUM_THREADS")) n = std::atoi(env);
  if (n <= 0) {
    cpu_set_t set;
    n = (sched_getaffinity(0, sizeof(set), &set) == 0) ? CPU_COUNT(&set) : omp_get_num_procs();
    int quota = cgroup_cpu_limit();
    if (quota > 0) n = std::min(n, quota);
  }
  return std::max(1, n);
}

// at::set_num_threads is not free even when the count does not change: it
// recreates LibTorch's pthreadpool, whose new workers spin for several ms of
// CPU (measured: 9 ms per call on 2 cores, 15 % of a 64 x 64 VGG16 batch of
// 16). So the count is set, and restored, only when it differs.
TorchThreadsGuard::TorchThreadsGuard(int n_threads) : previous_(at::get_num_threads()) {
  const int wanted = resolve_n_threads(n_threads);
  if (wanted != previous_) {
    at::set_num_threads(wanted);
    changed_ = true;
  }
}
TorchThreadsGuard::~TorchThreadsGuard() {
  if (changed_) at::set_num_threads(previous_);
}

// ---- interrupt callback -----------------------------------------------------
namespace {
std::unique_ptr<InterruptCallback>& instance() {
  static std::unique_ptr<InterruptCallback> cb;
  return cb;
}
}  // namespace

bool InterruptCallback::is_interrupted() {
  auto& cb = instance();
  return cb && cb->want_interrupt();
}
void InterruptCallback::check() {
  if (is_interrupted()) throw Interrupted();
}
void InterruptCallback::install(std::unique_ptr<InterruptCallback> cb) { instance() = std::move(cb); }
void InterruptCallback::clear() { instance().reset(); }

}  // namespace stemroi
