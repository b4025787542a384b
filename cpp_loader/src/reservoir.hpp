// Insertion policies: a pure decision of which slot (if any) receives the next sample of a
// class. Policies never touch sample data; they keep the per-class counters and tell the
// sampler which slots are filled.
//
// ReservoirPolicy ('fixed', the reference system's layout): K classes x N slots. For class c,
// while filled_c < N the sample goes to slot c*N + filled_c; afterwards j = uniform[0, seen_c)
// (seen_c counting this sample) and it replaces slot c*N + j if j < N. Every sample of class c
// seen so far is held with probability N / seen_c.
//
// AdaptivePolicy ('adaptive', the default): M slots shared by the classes seen so far, labels
// any non-negative integers, discovered as they arrive. With k classes, the class that arrived
// i-th (from 0) has quota M/k + (i < M mod k): the remainder goes to the earliest classes.
// A sample of class c (seen_c counting it, held_c slots of class c):
//   1. the slice is not full: it takes the next free slot (slots fill in order, 0, 1, ...);
//   2. full and held_c < quota_c: the class most over its quota (ties: the earliest) evicts one
//      of its samples uniformly at random and the new sample takes that slot;
//   3. otherwise reservoir: j = uniform[0, seen_c); if j < held_c it replaces the class's j-th
//      slot (ascending slot order), else it is dropped.
// Invariant: the samples of class c held are a uniform random subset of the seen_c seen so far
// (each held with probability held_c / seen_c); a class that ever dropped a sample holds at
// least its quota (quotas only shrink as classes arrive), so held_c < quota_c means nothing of
// class c was dropped and rule 2 keeps all. Once every class has reached its quota, held_c =
// quota_c: classes differ by at most one slot. Filled slots are always the prefix [0, filled).
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "rng.hpp"

namespace cpp_loader {

// Per-class counters in a policy's class order (fixed: label order; adaptive: arrival order).
struct PolicyCounters {
  std::vector<int64_t> classes;  // the labels
  std::vector<int64_t> seen;
  std::vector<int64_t> filled;
};

class InsertionPolicy {
 public:
  explicit InsertionPolicy(Generator gen) : gen_(gen) {}
  virtual ~InsertionPolicy() = default;

  // Counts one more sample of `label` (valid: checked by the caller) and returns the slot it
  // goes to, or -1 when it is not kept.
  virtual int64_t place(int64_t label) = 0;
  // The filled slots as blocks of consecutive slots, block b starting at slot b * block_stride();
  // the number of blocks never changes. This is what the global sampler numbers.
  virtual std::vector<int32_t> fill_blocks() const = 0;
  virtual int64_t block_stride() const = 0;
  virtual int64_t filled_total() const = 0;
  virtual PolicyCounters counters() const = 0;
  // Restores counters and generator, given the label of every slot (-1: empty); throws
  // std::invalid_argument, with nothing changed, when they are inconsistent.
  virtual void restore(const int64_t* slot_labels, const PolicyCounters& counters,
                       const std::string& generator_state) = 0;

  std::string generator_state() const { return save_generator(gen_); }

 protected:
  Generator gen_;
};

class ReservoirPolicy final : public InsertionPolicy {
 public:
  ReservoirPolicy(int64_t num_classes, int64_t slots_per_class, uint64_t seed, int rank);

  int64_t place(int64_t label) override;
  std::vector<int32_t> fill_blocks() const override { return filled_; }
  int64_t block_stride() const override { return slots_per_class_; }
  int64_t filled_total() const override;
  PolicyCounters counters() const override;
  void restore(const int64_t* slot_labels, const PolicyCounters& counters,
               const std::string& generator_state) override;

  const std::vector<int64_t>& seen() const { return seen_; }
  const std::vector<int32_t>& filled() const { return filled_; }

 private:
  int64_t slots_per_class_;
  std::vector<int64_t> seen_;
  std::vector<int32_t> filled_;
};

class AdaptivePolicy final : public InsertionPolicy {
 public:
  AdaptivePolicy(int64_t capacity, uint64_t seed, int rank);

  int64_t place(int64_t label) override;
  std::vector<int32_t> fill_blocks() const override { return {static_cast<int32_t>(filled_)}; }
  int64_t block_stride() const override { return capacity_; }
  int64_t filled_total() const override { return filled_; }
  PolicyCounters counters() const override;
  void restore(const int64_t* slot_labels, const PolicyCounters& counters,
               const std::string& generator_state) override;

  // Quota of the class that arrived `index`-th, with `classes` classes seen.
  static int64_t quota(int64_t capacity, size_t classes, size_t index);

 private:
  struct Class {
    int64_t label;
    int64_t seen = 0;
    std::vector<int64_t> slots;  // ascending
  };
  size_t most_over_quota() const;
  size_t index_of(int64_t label);  // position in classes_, adding the class when new
  void rebuild_lookups();          // quotas_ and small_index_ from classes_

  static constexpr int64_t kSmallLabels = 1 << 16;  // labels below it are looked up in a vector

  int64_t capacity_;
  int64_t filled_ = 0;
  std::vector<Class> classes_;                  // in order of arrival
  std::unordered_map<int64_t, size_t> index_;  // label -> position in classes_
  std::vector<int64_t> quotas_;                 // per class, for classes_.size() classes
  std::vector<int32_t> small_index_;            // label -> position + 1 (0: not seen), small labels
};

}  // namespace cpp_loader
