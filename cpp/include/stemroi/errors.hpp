// Exception types of the core and a checking macro whose messages carry values.
// The bindings map ValueError -> ValueError, TypeError -> TypeError,
// IOError -> OSError, Interrupted -> KeyboardInterrupt.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstdint>

namespace stemroi {

struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
struct IOError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted by the user") {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& v, const Rest&... rest) {
  os << v;
  append(os, rest...);
}
}  // namespace detail

// concat("expected 4-D, got ", x.dim()) -> std::string
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

// "(3, 64, 64)" for a shape, as NumPy prints it.
inline std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  if (shape.size() == 1) os << ",";
  os << ")";
  return os.str();
}

}  // namespace stemroi

// STEMROI_CHECK(n > 0, "n_clusters must be >= 1, got ", n);
#define STEMROI_CHECK(cond, ...)                                  \
  do {                                                            \
    if (!(cond)) throw ::stemroi::ValueError(::stemroi::concat(__VA_ARGS__)); \
  } while (0)
#define STEMROI_CHECK_TYPE(cond, ...)                             \
  do {                                                            \
    if (!(cond)) throw ::stemroi::TypeError(::stemroi::concat(__VA_ARGS__)); \
  } while (0)
