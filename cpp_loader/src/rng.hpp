// The generators: std::mt19937_64 seeded through std::seed_seq (both fully specified by the
// standard, so a seed gives the same stream with every compiler), an unbiased bounded draw
// that does not depend on the library's distributions, and the state as text.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace cpp_loader {

using Generator = std::mt19937_64;

// A generator for stream `ids` (e.g. {rank} or {rank, 1}) of `seed`.
inline Generator make_generator(uint64_t seed, std::initializer_list<uint64_t> ids) {
  std::vector<uint32_t> words{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  for (uint64_t id : ids) words.push_back(static_cast<uint32_t>(id));
  std::seed_seq seq(words.begin(), words.end());
  return Generator(seq);
}

// Uniform in [0, bound), bound > 0: rejects the 2**64 mod bound lowest outputs.
inline uint64_t uniform_below(Generator& gen, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t x = gen();
    if (x >= threshold) return x % bound;
  }
}

inline std::string save_generator(const Generator& gen) {
  std::ostringstream out;
  out << gen;
  return out.str();
}

inline Generator load_generator(const std::string& text, const char* what) {
  std::istringstream in(text);
  Generator gen;
  in >> gen;
  if (in.fail()) throw std::invalid_argument(std::string(what) + " generator state is malformed");
  return gen;
}

}  // namespace cpp_loader
