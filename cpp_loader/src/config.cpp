#include "config.hpp"

#include <limits>

namespace cpp_loader {

int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::uint8: return 1;
    case DType::float32: return 4;
    case DType::float16: return 2;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::uint8: return "uint8";
    case DType::float32: return "float32";
    case DType::float16: return "float16";
  }
  return "invalid";
}

const char* policy_name(Policy policy) { return policy == Policy::fixed ? "fixed" : "adaptive"; }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

int64_t Config::sample_elements() const {
  int64_t n = 1;
  for (int64_t d : sample_shape) n *= d;
  return n;
}

std::string Config::problem() const {
  constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
  if (policy == Policy::adaptive) {
    if (capacity <= 0) return "capacity (buffer_size) must be positive, got " + std::to_string(capacity);
    if (capacity > kMaxInt) return "capacity must be below 2**31, got " + std::to_string(capacity);
    if (num_classes < 0) return "num_classes must be >= 0 (0: not declared), got " + std::to_string(num_classes);
  } else {
    if (num_classes <= 0) return "num_classes must be positive, got " + std::to_string(num_classes);
    if (slots_per_class <= 0)
      return "slots_per_class must be positive, got " + std::to_string(slots_per_class);
    if (num_classes > kMaxInt || slots_per_class > kMaxInt / num_classes)
      return "num_classes * slots_per_class must be below 2**31, got " +
             std::to_string(num_classes) + " * " + std::to_string(slots_per_class);
  }
  if (num_extras < 0) return "num_extras must be >= 0, got " + std::to_string(num_extras);
  if (dtype_size(dtype) == 0) return "dtype must be uint8, float32 or float16";
  int64_t elements = 1;
  for (int64_t d : sample_shape) {
    if (d <= 0) return "sample_shape must have positive sizes, got " + shape_string(sample_shape);
    if (elements > kMaxInt / d) return "a sample must be below 2 GiB, got shape " + shape_string(sample_shape);
    elements *= d;
  }
  if (sample_bytes() > kMaxInt) return "a sample must be below 2 GiB, got shape " + shape_string(sample_shape);
  if (num_extras > kMaxInt / 4) return "num_extras is too large: " + std::to_string(num_extras);
  return "";
}

std::string Config::describe() const {
  return std::string("policy=") + policy_name(policy) + ";capacity=" + std::to_string(slots()) +
         ";num_classes=" + std::to_string(num_classes) +
         ";slots_per_class=" + std::to_string(slots_per_class) +
         ";sample_shape=" + shape_string(sample_shape) + ";dtype=" + dtype_name(dtype) +
         ";num_extras=" + std::to_string(num_extras);
}

}  // namespace cpp_loader
