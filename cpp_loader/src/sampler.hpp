// Global sampler: which global slots a draw reads, from every rank's fill counts.
//
// Each rank reports its filled slots as B blocks of consecutive slots (the fixed policy: one
// block per class, N apart; the adaptive one: a single block [0, filled)). The filled slots of
// all ranks are numbered rank-major, then block, then index: global index g runs over
// sum(fill) slots. A draw picks n = min(r, total) distinct g uniformly without replacement
// (Floyd's algorithm), then maps each to (rank, slot = b*stride + i). The result is sorted by
// (rank, slot), so the picks of one rank are consecutive. Reads no data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rng.hpp"

namespace cpp_loader {

struct SlotRef {
  int rank;
  int64_t slot;
};

class GlobalSampler {
 public:
  GlobalSampler(int64_t blocks_per_rank, int64_t block_stride, uint64_t seed, int rank);

  // fill: world_size * blocks_per_rank counts, rank-major, each in [0, block_stride]. r > 0.
  std::vector<SlotRef> draw(const std::vector<int32_t>& fill, int64_t r);

  std::string generator_state() const { return save_generator(gen_); }
  void restore(const std::string& generator_state) { gen_ = load_generator(generator_state, "draw"); }

 private:
  int64_t blocks_per_rank_;
  int64_t block_stride_;
  Generator gen_;
};

}  // namespace cpp_loader
