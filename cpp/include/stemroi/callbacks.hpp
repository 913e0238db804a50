// Interrupt and progress callbacks polled by long computations (faiss-style).
// The core never knows about Python: the bindings install an InterruptCallback
// that checks Python signals, so Ctrl-C stops a long fit in Jupyter.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

#include "stemroi/errors.hpp"

namespace stemroi {

class InterruptCallback {
 public:
  virtual ~InterruptCallback() = default;
  virtual bool want_interrupt() = 0;

  // Throws stemroi::Interrupted when the installed callback asks for it.
  // Call from the master thread only (outside or between parallel regions).
  static void check();
  // True when an interrupt is requested (for use inside parallel regions:
  // poll from thread 0, then stop cleanly and call check() after the region).
  static bool is_interrupted();
  static void install(std::unique_ptr<InterruptCallback> cb);
  static void clear();
};

// progress(done, total); may be empty. Called from the master thread only.
using ProgressFn = std::function<void(int64_t done, int64_t total)>;

}  // namespace stemroi
