// Bindings of the numeric area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_numeric(py::module_& m) {}
}  // namespace stemroi::bind
