#include "reservoir.hpp"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace cpp_loader {

ReservoirPolicy::ReservoirPolicy(int64_t num_classes, int64_t slots_per_class, uint64_t seed, int rank)
    : slots_per_class_(slots_per_class),
      seen_(static_cast<size_t>(num_classes), 0),
      filled_(static_cast<size_t>(num_classes), 0),
      gen_(make_generator(seed, {static_cast<uint64_t>(rank), 1})) {}

int64_t ReservoirPolicy::place(int64_t label) {
  const auto c = static_cast<size_t>(label);
  const int64_t seen = ++seen_[c];
  if (filled_[c] < slots_per_class_) return label * slots_per_class_ + filled_[c]++;
  const auto j = static_cast<int64_t>(uniform_below(gen_, static_cast<uint64_t>(seen)));
  return j < slots_per_class_ ? label * slots_per_class_ + j : -1;
}

int64_t ReservoirPolicy::filled_total() const {
  return std::accumulate(filled_.begin(), filled_.end(), int64_t{0});
}

void ReservoirPolicy::restore(const std::vector<int64_t>& seen, const std::vector<int32_t>& filled,
                              const std::string& generator_state) {
  if (seen.size() != seen_.size() || filled.size() != filled_.size())
    throw std::invalid_argument("counters have " + std::to_string(seen.size()) + " classes, expected " +
                                std::to_string(seen_.size()));
  for (size_t c = 0; c < seen.size(); ++c)
    if (seen[c] < 0 || filled[c] != std::min<int64_t>(seen[c], slots_per_class_))
      throw std::invalid_argument("class " + std::to_string(c) + " has seen=" + std::to_string(seen[c]) +
                                  " and filled=" + std::to_string(filled[c]) +
                                  ": expected filled = min(seen, slots_per_class)");
  Generator gen = load_generator(generator_state, "insertion");
  seen_ = seen;
  filled_ = filled;
  gen_ = gen;
}

}  // namespace cpp_loader
