// Reservoir policy: a pure decision of which slot (if any) receives the next sample of a class.
//
// Class-balanced reservoir sampling per rank: for class c, while filled_c < N the sample goes
// to slot c*N + filled_c; afterwards j = uniform[0, seen_c) (seen_c counting this sample) and
// the sample replaces slot c*N + j if j < N. Every sample of class c seen so far is then held
// with probability N / seen_c. The policy never touches sample data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rng.hpp"

namespace cpp_loader {

class ReservoirPolicy {
 public:
  ReservoirPolicy(int64_t num_classes, int64_t slots_per_class, uint64_t seed, int rank);

  // Counts one more sample of `label` (in range: checked by the caller) and returns the slot
  // it goes to, or -1 when it is not kept.
  int64_t place(int64_t label);

  const std::vector<int64_t>& seen() const { return seen_; }
  const std::vector<int32_t>& filled() const { return filled_; }
  int64_t filled_total() const;

  std::string generator_state() const { return save_generator(gen_); }
  // Restores counters and generator; throws std::invalid_argument if they are inconsistent.
  void restore(const std::vector<int64_t>& seen, const std::vector<int32_t>& filled,
               const std::string& generator_state);

 private:
  int64_t slots_per_class_;
  std::vector<int64_t> seen_;
  std::vector<int32_t> filled_;
  Generator gen_;
};

}  // namespace cpp_loader
