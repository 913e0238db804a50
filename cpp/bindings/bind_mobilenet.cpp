// Bindings of the mobilenet area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_mobilenet(py::module_& m) {}
}  // namespace stemroi::bind
