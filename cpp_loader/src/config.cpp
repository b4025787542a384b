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
  const auto at_least = [](const char* name, int64_t low, int64_t value) {
    return std::string(name) + " must be in [" + std::to_string(low) + ", inf), got " + std::to_string(value);
  };
  if (policy == Policy::adaptive) {
    if (capacity <= 0) return at_least("capacity", 1, capacity);
    if (capacity > kMaxInt) return "capacity must be below 2**31, got " + std::to_string(capacity);
    if (num_classes < 0) return "num_classes must be >= 0 (0: not declared), got " + std::to_string(num_classes);
  } else {
    if (num_classes <= 0) return at_least("num_classes", 1, num_classes);
    if (slots_per_class <= 0) return at_least("slots_per_class", 1, slots_per_class);
    if (num_classes > kMaxInt || slots_per_class > kMaxInt / num_classes)
      return "num_classes * slots_per_class must be below 2**31, got " +
             std::to_string(num_classes) + " * " + std::to_string(slots_per_class);
  }
  if (num_extras < 0) return at_least("num_extras", 0, num_extras);
  if (dtype_size(dtype) == 0) return "dtype must be uint8, float32 or float16";
  int64_t elements = 1;
  for (int64_t d : sample_shape) {
    if (d <= 0) return "sample_shape entries must be in [1, inf), got " + shape_string(sample_shape);
    if (elements > kMaxInt / d) return "a sample must be below 2 GiB, got shape " + shape_string(sample_shape);
    elements *= d;
  }
  if (sample_bytes() > kMaxInt) return "a sample must be below 2 GiB, got shape " + shape_string(sample_shape);
  if (num_extras > kMaxInt / 4) return "num_extras is too large: " + std::to_string(num_extras);
  return "";
}

std::pair<Config, std::string> Arguments::parse() const {
  std::string problems;
  const auto problem = [&problems](const std::string& text) { problems += (problems.empty() ? "" : "; ") + text; };
  Config c;
  c.seed = seed;
  c.num_extras = num_extras;
  if (policy == "adaptive") {
    c.policy = Policy::adaptive;
  } else if (policy != "fixed") {
    problem("policy must be 'adaptive' or 'fixed', got '" + policy + "'");
  }
  if (c.policy == Policy::fixed) {
    if (capacity) problem("capacity is for the adaptive policy; the fixed one has num_classes x slots_per_class slots");
    if (!num_classes || !slots_per_class) problem("the fixed policy needs num_classes and slots_per_class");
    c.num_classes = num_classes.value_or(1);
    c.slots_per_class = slots_per_class.value_or(1);
  } else {
    if (slots_per_class)
      problem("slots_per_class is for the fixed policy; the adaptive one shares capacity slots among the classes seen");
    if (!capacity) problem("the adaptive policy needs capacity (slots per rank)");
    if (num_classes && *num_classes < 1) problem("num_classes must be in [1, inf), got " + std::to_string(*num_classes));
    c.num_classes = num_classes && *num_classes > 0 ? *num_classes : 0;  // 0: not declared
    c.capacity = capacity.value_or(1);
  }
  if (!sample_shape) problem("sample_shape is required");
  c.sample_shape = sample_shape.value_or(std::vector<int64_t>{1});
  if (dtype == "float32") {
    c.dtype = DType::float32;
  } else if (dtype == "float16") {
    c.dtype = DType::float16;
  } else if (dtype != "uint8") {
    problem("dtype must be one of uint8, float32, float16 (native byte order), got '" + dtype + "'");
  }
  if (problems.empty()) problems = c.problem();
  return {c, problems};
}

std::string Config::describe() const {
  return std::string("policy=") + policy_name(policy) + ";capacity=" + std::to_string(slots()) +
         ";num_classes=" + std::to_string(num_classes) +
         ";slots_per_class=" + std::to_string(slots_per_class) +
         ";sample_shape=" + shape_string(sample_shape) + ";dtype=" + dtype_name(dtype) +
         ";num_extras=" + std::to_string(num_extras);
}

}  // namespace cpp_loader
