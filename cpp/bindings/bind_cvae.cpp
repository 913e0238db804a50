// Bindings of the cvae area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_cvae(py::module_& m) {}
}  // namespace stemroi::bind
