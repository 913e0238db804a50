// Bindings of the vgg16 area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_vgg16(py::module_& m) {}
}  // namespace stemroi::bind
