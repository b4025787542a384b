// What a buffer is: its insertion policy and slots per rank (fixed: K classes x N slots;
// adaptive: M slots shared by the classes seen), the sample shape and dtype, extras per slot.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cpp_loader {

enum class DType : int { uint8 = 0, float32 = 1, float16 = 2 };
enum class Policy : int { fixed = 0, adaptive = 1 };

int64_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
const char* policy_name(Policy policy);

struct Config {
  int64_t num_classes = 0;
  int64_t slots_per_class = 0;
  std::vector<int64_t> sample_shape;
  DType dtype = DType::uint8;
  int64_t num_extras = 0;
  uint64_t seed = 0;
  Policy policy = Policy::fixed;
  int64_t capacity = 0;  // adaptive: M slots per rank (num_classes: 0, or a bound labels are checked against)

  int64_t slots() const { return policy == Policy::fixed ? num_classes * slots_per_class : capacity; }
  // Fill-count blocks per rank the sampler sees: one per class (fixed), one in all (adaptive).
  int64_t blocks() const { return policy == Policy::fixed ? num_classes : 1; }
  int64_t sample_elements() const;
  int64_t sample_bytes() const { return sample_elements() * dtype_size(dtype); }
  // "" when valid, else what is wrong (expected vs got).
  std::string problem() const;
  // Canonical "name=value" fields, ';'-separated, compared across ranks at construction.
  std::string describe() const;
};

// The constructor's arguments as the caller gave them (absent ones empty, names as text): the
// one place where they are validated. parse() gives the Config (placeholders where an argument
// is missing or invalid, so the collective construction can still run) and "" or every problem.
struct Arguments {
  std::string policy;  // "fixed" | "adaptive"
  std::optional<int64_t> num_classes;
  std::optional<int64_t> slots_per_class;
  std::optional<int64_t> capacity;
  std::optional<std::vector<int64_t>> sample_shape;
  std::string dtype;  // "uint8" | "float32" | "float16"
  int64_t num_extras = 0;
  uint64_t seed = 0;

  std::pair<Config, std::string> parse() const;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace cpp_loader
