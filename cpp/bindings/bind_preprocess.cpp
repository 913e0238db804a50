// Bindings of the preprocess area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_preprocess(py::module_& m) {}
}  // namespace stemroi::bind
