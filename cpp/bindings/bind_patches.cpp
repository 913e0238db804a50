// Bindings of the patches area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_patches(py::module_& m) {}
}  // namespace stemroi::bind
