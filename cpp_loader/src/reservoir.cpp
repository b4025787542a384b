#include "reservoir.hpp"

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace cpp_loader {

// ----------------------------------------------------------------------------- fixed K x N

ReservoirPolicy::ReservoirPolicy(int64_t num_classes, int64_t slots_per_class, uint64_t seed, int rank)
    : InsertionPolicy(make_generator(seed, {static_cast<uint64_t>(rank), 1})),
      slots_per_class_(slots_per_class),
      seen_(static_cast<size_t>(num_classes), 0),
      filled_(static_cast<size_t>(num_classes), 0) {}

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

PolicyCounters ReservoirPolicy::counters() const {
  PolicyCounters c;
  c.classes.resize(seen_.size());
  std::iota(c.classes.begin(), c.classes.end(), int64_t{0});
  c.seen = seen_;
  c.filled.assign(filled_.begin(), filled_.end());
  return c;
}

void ReservoirPolicy::restore(const int64_t* slot_labels, const PolicyCounters& counters,
                              const std::string& generator_state) {
  const size_t K = seen_.size();
  if (counters.seen.size() != K || counters.filled.size() != K || counters.classes.size() != K)
    throw std::invalid_argument("counters have " + std::to_string(counters.seen.size()) + " classes, expected " +
                                std::to_string(K));
  for (size_t c = 0; c < K; ++c) {
    if (counters.classes[c] != static_cast<int64_t>(c))
      throw std::invalid_argument("classes must be 0, 1, ..., " + std::to_string(K - 1) + " in order");
    if (counters.seen[c] < 0 || counters.filled[c] != std::min<int64_t>(counters.seen[c], slots_per_class_))
      throw std::invalid_argument("class " + std::to_string(c) + " has seen=" + std::to_string(counters.seen[c]) +
                                  " and filled=" + std::to_string(counters.filled[c]) +
                                  ": expected filled = min(seen, slots_per_class)");
    // Class c owns slots [c*N, (c+1)*N): its first `filled` hold label c, the rest are empty (-1),
    // so a draw can never return a label outside [0, K) or an empty slot.
    for (int64_t j = 0; j < slots_per_class_; ++j) {
      const int64_t slot = static_cast<int64_t>(c) * slots_per_class_ + j;
      const int64_t want = j < counters.filled[c] ? static_cast<int64_t>(c) : -1;
      if (slot_labels[slot] != want)
        throw std::invalid_argument("slot " + std::to_string(slot) + " holds label " +
                                    std::to_string(slot_labels[slot]) + ", expected " + std::to_string(want) +
                                    " (class " + std::to_string(c) + " with " + std::to_string(counters.filled[c]) +
                                    " filled slots)");
    }
  }
  Generator gen = load_generator(generator_state, "insertion");
  seen_ = counters.seen;
  filled_.assign(counters.filled.begin(), counters.filled.end());
  gen_ = gen;
}

// ----------------------------------------------------------------------------- adaptive

AdaptivePolicy::AdaptivePolicy(int64_t capacity, uint64_t seed, int rank)
    : InsertionPolicy(make_generator(seed, {static_cast<uint64_t>(rank), 1})), capacity_(capacity) {}

int64_t AdaptivePolicy::quota(int64_t capacity, size_t classes, size_t index) {
  const auto k = static_cast<int64_t>(classes);
  return capacity / k + (static_cast<int64_t>(index) < capacity % k ? 1 : 0);
}

size_t AdaptivePolicy::most_over_quota() const {
  size_t best = 0;
  int64_t excess = std::numeric_limits<int64_t>::min();
  for (size_t i = 0; i < classes_.size(); ++i) {
    const int64_t e = static_cast<int64_t>(classes_[i].slots.size()) - quotas_[i];
    if (e > excess) best = i, excess = e;
  }
  return best;
}

void AdaptivePolicy::rebuild_lookups() {
  quotas_.resize(classes_.size());
  for (size_t i = 0; i < classes_.size(); ++i) quotas_[i] = quota(capacity_, classes_.size(), i);
  small_index_.clear();
  for (size_t i = 0; i < classes_.size(); ++i) {
    const int64_t label = classes_[i].label;
    if (label >= kSmallLabels) continue;
    if (static_cast<int64_t>(small_index_.size()) <= label) small_index_.resize(static_cast<size_t>(label) + 1, 0);
    small_index_[static_cast<size_t>(label)] = static_cast<int32_t>(i + 1);
  }
}

size_t AdaptivePolicy::index_of(int64_t label) {
  if (label < static_cast<int64_t>(small_index_.size()) && small_index_[static_cast<size_t>(label)] > 0)
    return static_cast<size_t>(small_index_[static_cast<size_t>(label)] - 1);
  auto [it, is_new] = index_.try_emplace(label, classes_.size());
  if (is_new) {
    classes_.push_back(Class{label, 0, {}});
    rebuild_lookups();  // a new class: every quota changes
  }
  return it->second;
}

int64_t AdaptivePolicy::place(int64_t label) {
  const size_t c = index_of(label);
  Class& cls = classes_[c];
  ++cls.seen;
  if (filled_ < capacity_) {  // rule 1: slots fill in order, so push_back keeps them ascending
    cls.slots.push_back(filled_);
    return filled_++;
  }
  const auto held = static_cast<int64_t>(cls.slots.size());
  if (held < quotas_[c]) {  // rule 2: take a slot of the most over-quota class
    std::vector<int64_t>& victim = classes_[most_over_quota()].slots;
    const auto j = static_cast<ptrdiff_t>(uniform_below(gen_, victim.size()));
    const int64_t slot = victim[static_cast<size_t>(j)];
    victim.erase(victim.begin() + j);
    cls.slots.insert(std::upper_bound(cls.slots.begin(), cls.slots.end(), slot), slot);
    return slot;
  }
  const auto j = static_cast<int64_t>(uniform_below(gen_, static_cast<uint64_t>(cls.seen)));  // rule 3
  return j < held ? cls.slots[static_cast<size_t>(j)] : -1;
}

PolicyCounters AdaptivePolicy::counters() const {
  PolicyCounters c;
  for (const Class& cls : classes_) {
    c.classes.push_back(cls.label);
    c.seen.push_back(cls.seen);
    c.filled.push_back(static_cast<int64_t>(cls.slots.size()));
  }
  return c;
}

void AdaptivePolicy::restore(const int64_t* slot_labels, const PolicyCounters& counters,
                             const std::string& generator_state) {
  const size_t k = counters.classes.size();
  if (counters.seen.size() != k || counters.filled.size() != k)
    throw std::invalid_argument("classes, seen_per_class and filled_per_class differ in length");
  std::vector<Class> classes;
  std::unordered_map<int64_t, size_t> index;
  for (size_t i = 0; i < k; ++i) {
    const int64_t label = counters.classes[i];
    if (label < 0) throw std::invalid_argument("class label " + std::to_string(label) + " is negative");
    if (!index.try_emplace(label, i).second)
      throw std::invalid_argument("class " + std::to_string(label) + " is listed twice");
    classes.push_back(Class{label, counters.seen[i], {}});
  }
  int64_t filled = 0;
  while (filled < capacity_ && slot_labels[filled] >= 0) ++filled;
  for (int64_t s = 0; s < capacity_; ++s) {
    const int64_t label = slot_labels[s];
    if (s >= filled) {
      if (label != -1)
        throw std::invalid_argument("slot " + std::to_string(s) + " holds label " + std::to_string(label) +
                                    " after the first empty slot " + std::to_string(filled));
      continue;
    }
    const auto found = index.find(label);
    if (found == index.end())
      throw std::invalid_argument("slot " + std::to_string(s) + " holds label " + std::to_string(label) +
                                  ", which is not among the classes");
    classes[found->second].slots.push_back(s);
  }
  for (size_t i = 0; i < k; ++i) {
    const Class& cls = classes[i];
    const auto held = static_cast<int64_t>(cls.slots.size());
    const std::string name = "class " + std::to_string(cls.label);
    if (held != counters.filled[i])
      throw std::invalid_argument(name + " has filled=" + std::to_string(counters.filled[i]) + " but " +
                                  std::to_string(held) + " slots hold it");
    if (cls.seen < held)
      throw std::invalid_argument(name + " has seen=" + std::to_string(cls.seen) + " but holds " +
                                  std::to_string(held));
  }
  Generator gen = load_generator(generator_state, "insertion");
  classes_ = std::move(classes);
  index_ = std::move(index);
  filled_ = filled;
  gen_ = gen;
  rebuild_lookups();
}

}  // namespace cpp_loader
