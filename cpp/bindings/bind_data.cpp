// Bindings of the data area: overlap detection between patches, etc.
#include "common.hpp"

namespace stemroi::bind {
void bind_data(py::module_& m) {}
}  // namespace stemroi::bind
