// Bindings of the unet area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_unet(py::module_& m) {}
}  // namespace stemroi::bind
