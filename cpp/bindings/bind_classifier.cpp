// Bindings of the classifier area (filled in by the issue that builds it).
#include "common.hpp"

namespace stemroi::bind {
void bind_classifier(py::module_& m) {}
}  // namespace stemroi::bind
