#include "sampler.hpp"

#include <algorithm>
#include <unordered_set>

namespace cpp_loader {

GlobalSampler::GlobalSampler(int64_t blocks_per_rank, int64_t block_stride, uint64_t seed, int rank)
    : blocks_per_rank_(blocks_per_rank),
      block_stride_(block_stride),
      gen_(make_generator(seed, {static_cast<uint64_t>(rank)})) {}

std::vector<SlotRef> GlobalSampler::draw(const std::vector<int32_t>& fill, int64_t r) {
  int64_t total = 0;
  for (int32_t f : fill) total += f;
  const int64_t n = std::min(r, total);

  // Floyd: for j in [total - n, total): t = uniform[0, j]; take t, or j if t is taken.
  std::vector<int64_t> picks;
  picks.reserve(static_cast<size_t>(n));
  std::unordered_set<int64_t> taken(static_cast<size_t>(2 * n + 1));
  for (int64_t j = total - n; j < total; ++j) {
    const auto t = static_cast<int64_t>(uniform_below(gen_, static_cast<uint64_t>(j + 1)));
    const int64_t pick = taken.insert(t).second ? t : j;
    if (pick == j) taken.insert(j);
    picks.push_back(pick);
  }
  std::sort(picks.begin(), picks.end());

  // Walk the (rank, block) blocks of filled slots alongside the sorted picks.
  std::vector<SlotRef> refs;
  refs.reserve(picks.size());
  int64_t block_start = 0;
  size_t block = 0;
  for (int64_t g : picks) {
    while (g >= block_start + fill[block]) block_start += fill[block++];
    const auto rank = static_cast<int>(static_cast<int64_t>(block) / blocks_per_rank_);
    const int64_t b = static_cast<int64_t>(block) % blocks_per_rank_;
    refs.push_back({rank, b * block_stride_ + (g - block_start)});
  }
  return refs;
}

}  // namespace cpp_loader
