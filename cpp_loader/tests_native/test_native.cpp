// Tests of the native core without Python: generator, insertion policies, global sampler, worker,
// and the MPI buffer (storage + transport) end to end. Run under mpirun -np 1 and -np 2;
// scripts/sanitize_native.sh builds it with AddressSanitizer and UBSan.
//
// Real checks (not assert()): every failed check is printed, and the exit status is non-zero
// on every rank if any rank failed one.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "buffer.hpp"
#include "reservoir.hpp"
#include "rng.hpp"
#include "sampler.hpp"
#include "worker.hpp"

using namespace cpp_loader;

namespace {

int failures = 0;

void expect(bool ok, const std::string& what, int line) {
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "test_native.cpp:%d: check failed: %s\n", line, what.c_str());
}
#define EXPECT(cond) expect((cond), #cond, __LINE__)

// Runs f and checks that it throws E with `needle` in its message.
template <class E, class F>
void expect_throws(F&& f, const std::string& needle, int line) {
  try {
    f();
  } catch (const E& e) {
    expect(std::string(e.what()).find(needle) != std::string::npos,
           "message '" + std::string(e.what()) + "' lacks '" + needle + "'", line);
    return;
  } catch (const std::exception& e) {
    expect(false, std::string("wrong exception type: ") + e.what(), line);
    return;
  }
  expect(false, "no exception, expected one with '" + needle + "'", line);
}
#define EXPECT_THROWS(E, call, needle) expect_throws<E>([&] { call; }, needle, __LINE__)

// ----------------------------------------------------------------------------- pure roles

void test_generator() {
  Generator a = make_generator(7, {1}), b = make_generator(7, {1}), c = make_generator(7, {2});
  EXPECT(a() == b());
  EXPECT(a() != c());
  for (uint64_t bound : {1ull, 2ull, 3ull, 10ull, 1000003ull})
    for (int i = 0; i < 200; ++i) EXPECT(uniform_below(a, bound) < bound);
  const std::string saved = save_generator(a);
  const uint64_t next = a();
  Generator restored = load_generator(saved, "test");
  EXPECT(restored() == next);
  EXPECT_THROWS(std::invalid_argument, load_generator("not a state", "draw"), "draw generator state is malformed");
}

void test_reservoir() {
  ReservoirPolicy policy(2, 3, 1, 0);
  EXPECT(policy.place(1) == 3 && policy.place(1) == 4 && policy.place(0) == 0 && policy.place(1) == 5);
  EXPECT(policy.filled() == std::vector<int32_t>({1, 3}) && policy.seen() == std::vector<int64_t>({1, 3}));
  for (int i = 0; i < 50; ++i) {
    const int64_t slot = policy.place(1);
    EXPECT(slot == -1 || (slot >= 3 && slot < 6));
  }
  EXPECT(policy.seen()[1] == 53 && policy.filled()[1] == 3 && policy.filled_total() == 4);

  // Each of M samples is held with probability N/M: empirical inclusion of the first and
  // last sample over many independent policies.
  const int N = 3, M = 12, trials = 4000;
  int first_held = 0, last_held = 0;
  for (int t = 0; t < trials; ++t) {
    ReservoirPolicy p(1, N, static_cast<uint64_t>(t), 0);
    std::vector<int> slot_holds(N);
    for (int m = 0; m < M; ++m) {
      const int64_t slot = p.place(0);
      if (slot >= 0) slot_holds[slot] = m;
    }
    first_held += std::count(slot_holds.begin(), slot_holds.end(), 0);
    last_held += std::count(slot_holds.begin(), slot_holds.end(), M - 1);
  }
  const double expected = static_cast<double>(N) / M, tolerance = 4 * std::sqrt(expected * (1 - expected) / trials);
  EXPECT(std::fabs(first_held / double(trials) - expected) < tolerance);
  EXPECT(std::fabs(last_held / double(trials) - expected) < tolerance);

  // The fixed layout's slot labels follow from the counters: class c's first `filled` slots hold c.
  const PolicyCounters counters = policy.counters();
  std::vector<int64_t> labels(2 * 3, -1);
  for (int64_t c = 0; c < 2; ++c)
    for (int64_t j = 0; j < counters.filled[c]; ++j) labels[c * 3 + j] = c;
  ReservoirPolicy copy(2, 3, 99, 0);
  copy.restore(labels.data(), counters, policy.generator_state());
  for (int i = 0; i < 20; ++i) EXPECT(copy.place(1) == policy.place(1));
  EXPECT_THROWS(std::invalid_argument,
                copy.restore(labels.data(), PolicyCounters{{0, 1}, {5, 1}, {2, 1}}, policy.generator_state()),
                "class 0 has seen=5 and filled=2");
  std::vector<int64_t> wrong = labels;
  wrong[0] = 7;  // a label outside [0, K) in a filled slot
  EXPECT_THROWS(std::invalid_argument, copy.restore(wrong.data(), counters, policy.generator_state()),
                "slot 0 holds label 7");
}

// The adaptive policy: slots fill in order, quotas shrink as classes arrive (the remainder to
// the earliest), evictions free slots for the new class, and inclusion stays quota / seen.
void test_adaptive() {
  AdaptivePolicy policy(7, 1, 0);
  for (int64_t s = 0; s < 7; ++s) EXPECT(policy.place(42) == s);  // one class: every slot
  EXPECT(policy.counters().filled == std::vector<int64_t>({7}));
  for (int i = 0; i < 40; ++i) {  // a new class takes over-quota slots until 3 of 7 are its own
    const int64_t slot = policy.place(5);
    EXPECT(slot < 7 && (slot >= 0 || i >= 3));  // kept while under quota, then a reservoir
  }
  PolicyCounters c = policy.counters();
  EXPECT(c.classes == std::vector<int64_t>({42, 5}) && c.filled == std::vector<int64_t>({4, 3}));
  EXPECT(AdaptivePolicy::quota(7, 2, 0) == 4 && AdaptivePolicy::quota(7, 2, 1) == 3);
  EXPECT(policy.fill_blocks() == std::vector<int32_t>({7}) && policy.filled_total() == 7);
  policy.place(0);
  c = policy.counters();
  EXPECT(c.filled == std::vector<int64_t>({3, 2, 1}) || c.filled == std::vector<int64_t>({3, 3, 1}) ||
         c.filled == std::vector<int64_t>({4, 2, 1}));
  EXPECT(c.filled[0] + c.filled[1] + c.filled[2] == 7);

  // Inclusion after the quotas shrink: class A's first and last of 12 samples are held with
  // probability 2/12 once class B has taken its 2 of 4 slots.
  const int trials = 4000;
  int first_held = 0, last_held = 0;
  for (int t = 0; t < trials; ++t) {
    AdaptivePolicy p(4, static_cast<uint64_t>(t), 0);
    std::vector<int> holds(4, -1);
    for (int m = 0; m < 12; ++m) {
      const int64_t slot = p.place(1);
      if (slot >= 0) holds[static_cast<size_t>(slot)] = m;
    }
    for (int m = 0; m < 6; ++m) {
      const int64_t slot = p.place(2);
      if (slot >= 0) holds[static_cast<size_t>(slot)] = 100 + m;
    }
    first_held += std::count(holds.begin(), holds.end(), 0);
    last_held += std::count(holds.begin(), holds.end(), 11);
  }
  const double expected = 2.0 / 12, tolerance = 4 * std::sqrt(expected * (1 - expected) / trials);
  EXPECT(std::fabs(first_held / double(trials) - expected) < tolerance);
  EXPECT(std::fabs(last_held / double(trials) - expected) < tolerance);

  // restore rebuilds the slot lists from the slots' labels, and refuses what does not add up.
  std::vector<int64_t> labels(7, -1);
  AdaptivePolicy source(7, 3, 0);
  for (int64_t y : {9, 4, 9, 4, 4, 9, 9, 4, 4, 4}) {
    const int64_t slot = source.place(y);
    if (slot >= 0) labels[static_cast<size_t>(slot)] = y;
  }
  AdaptivePolicy copy(7, 99, 0);
  copy.restore(labels.data(), source.counters(), source.generator_state());
  for (int i = 0; i < 30; ++i) EXPECT(copy.place(i % 3) == source.place(i % 3));
  PolicyCounters twice = source.counters();
  twice.classes[1] = twice.classes[0];
  EXPECT_THROWS(std::invalid_argument, copy.restore(labels.data(), twice, source.generator_state()), "listed twice");
  std::vector<int64_t> stray(labels);
  stray[0] = 77;
  EXPECT_THROWS(std::invalid_argument, copy.restore(stray.data(), source.counters(), source.generator_state()),
                "not among the classes");
}

void test_sampler() {
  // 3 ranks, K=2, N=4: rank 0 full, rank 1 half of class 0, rank 2 empty: 10 filled slots.
  const std::vector<int32_t> fill{4, 4, 2, 0, 0, 0};
  GlobalSampler sampler(2, 4, 3, 0);
  std::vector<int> counts(24, 0);  // rank * 8 + slot
  const int draws = 6000, r = 3;
  for (int d = 0; d < draws; ++d) {
    const auto refs = sampler.draw(fill, r);
    EXPECT(refs.size() == static_cast<size_t>(r));
    for (size_t k = 0; k < refs.size(); ++k) {
      const auto& s = refs[k];
      EXPECT(s.rank >= 0 && s.rank < 3 && s.slot >= 0 && s.slot < 8);
      EXPECT(s.slot % 4 < fill[static_cast<size_t>(s.rank) * 2 + s.slot / 4]);  // a filled slot
      if (k) EXPECT(std::make_pair(refs[k - 1].rank, refs[k - 1].slot) < std::make_pair(s.rank, s.slot));
      ++counts[static_cast<size_t>(s.rank) * 8 + s.slot];
    }
  }
  const double expected = draws * r / 10.0;  // 1800 per filled slot
  for (int cell = 0; cell < 24; ++cell) {
    const bool filled = cell < 8 || cell == 8 || cell == 9;  // rank 0: all; rank 1: slots 0, 1
    if (filled)
      EXPECT(std::fabs(counts[cell] - expected) < 5 * std::sqrt(expected));
    else
      EXPECT(counts[cell] == 0);
  }
  EXPECT(sampler.draw(fill, 50).size() == 10);               // all of them, once
  EXPECT(sampler.draw(std::vector<int32_t>(6, 0), 5).empty());  // nothing filled
}

void test_worker() {
  Worker worker;
  worker.submit([] { return int64_t{42}; });
  EXPECT_THROWS(std::logic_error, worker.submit([] { return int64_t{0}; }), "already pending");
  EXPECT(worker.wait() == 42);
  EXPECT_THROWS(std::logic_error, worker.wait(), "no job is pending");
  worker.submit([]() -> int64_t { throw std::runtime_error("failed in the background"); });
  EXPECT_THROWS(std::runtime_error, worker.wait(), "failed in the background");
  worker.submit([] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return int64_t{1};
  });
  worker.stop();  // waits for the job, then joins
  worker.stop();
}

// ----------------------------------------------------------------------------- MPI buffer

constexpr int64_t K = 3, N = 4, E = 2;
int64_t kBytes = 40;  // sample size of the current run: small (hindexed gets) or large (a get per run)

// Sample bytes are a function of (rank, label, id); the first 8 bytes hold the id.
std::vector<std::byte> pattern(int rank, int64_t label, int64_t id) {
  std::vector<std::byte> bytes(kBytes);
  std::memcpy(bytes.data(), &id, 8);
  for (int64_t k = 8; k < kBytes; ++k) bytes[k] = std::byte((rank * 131 + label * 17 + id * 7 + k) % 251);
  return bytes;
}

std::vector<float> extras_pattern(int rank, int64_t label, int64_t id) {
  return {float(rank * 1000 + label), float(id)};
}

Config config(uint64_t seed = 5, Policy policy = Policy::fixed) {
  return Config{policy == Policy::fixed ? K : 0, policy == Policy::fixed ? N : 0, {kBytes}, DType::uint8, E, seed,
                policy, policy == Policy::fixed ? 0 : K * N};
}

// Adds `count` samples of rank `rank` with ids from `first_id`, labels id % K.
void add_samples(Buffer& buf, int rank, int64_t first_id, int64_t count) {
  std::vector<std::byte> x;
  std::vector<int64_t> y;
  std::vector<float> e;
  for (int64_t id = first_id; id < first_id + count; ++id) {
    const auto bytes = pattern(rank, id % K, id);
    const auto extras = extras_pattern(rank, id % K, id);
    x.insert(x.end(), bytes.begin(), bytes.end());
    e.insert(e.end(), extras.begin(), extras.end());
    y.push_back(id % K);
  }
  buf.add(x.data(), y.data(), e.data(), count);
}

struct Outputs {
  std::vector<std::byte> x;
  std::vector<int64_t> y;
  std::vector<float> e;

  explicit Outputs(int64_t rows) : x(rows * kBytes), y(rows, -1), e(rows * E) {}
  Output view() { return Output{x.data(), y.data(), e.data(), static_cast<int64_t>(y.size())}; }
  // Each of the first n rows is a whole sample of some rank with its label and extras.
  void check_rows(int64_t n, int world_size) const {
    std::set<std::pair<int, int64_t>> distinct;
    for (int64_t k = 0; k < n; ++k) {
      int64_t id = 0;
      std::memcpy(&id, x.data() + k * kBytes, 8);
      bool found = false;
      for (int p = 0; p < world_size && !found; ++p) {
        const auto bytes = pattern(p, y[k], id);
        const auto extras = extras_pattern(p, y[k], id);
        found = std::equal(bytes.begin(), bytes.end(), x.begin() + k * kBytes) &&
                std::equal(extras.begin(), extras.end(), e.begin() + k * E) && id % K == y[k];
        if (found) EXPECT(distinct.insert({p, id}).second);
      }
      expect(found, "row " + std::to_string(k) + " is not an inserted sample", __LINE__);
    }
    for (size_t k = static_cast<size_t>(n); k < y.size(); ++k) EXPECT(y[k] == -1);
  }
};

void test_buffer(MPI_Comm comm, Policy policy) {
  const auto config = [policy](uint64_t seed = 5) { return ::config(seed, policy); };
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);

  Config bad = config();
  bad.num_classes = rank == size - 1 ? 4 : 3;
  if (size > 1 && policy == Policy::fixed)
    EXPECT_THROWS(std::invalid_argument, Buffer(bad, comm), "but rank " + std::to_string(size - 1) + " has num_classes=4");
  EXPECT_THROWS(std::invalid_argument, Buffer(config(), comm, "told so"), "invalid Buffer arguments");
  Config zero = config();
  zero.slots_per_class = 0;
  zero.capacity = 0;
  EXPECT_THROWS(std::invalid_argument, Buffer(zero, comm),
                policy == Policy::fixed ? "slots_per_class must be in [1, inf), got 0" : "capacity must be in [1, inf), got 0");

  Buffer buf(config(), comm);
  EXPECT(buf.rank() == rank && buf.world_size() == size);
  add_samples(buf, rank, 0, 30);  // 10 per class: replacements
  const int64_t bad_label = 7;
  std::vector<std::byte> one(kBytes);
  float two[2] = {0, 0};
  const int64_t negative = -2;
  if (policy == Policy::fixed)
    EXPECT_THROWS(LabelError, buf.add(one.data(), &bad_label, two, 1), "label 7 (sample 0) is outside [0, 3)");
  EXPECT_THROWS(LabelError, buf.add(one.data(), &negative, two, 1), "label -2 (sample 0)");
  Stats stats = buf.stats();
  EXPECT(stats.filled == K * N && stats.seen_per_class == std::vector<int64_t>({10, 10, 10}));
  EXPECT(stats.classes == std::vector<int64_t>({0, 1, 2}) && stats.capacity == K * N);
  if (policy == Policy::adaptive) EXPECT(stats.filled_per_class == std::vector<int64_t>({4, 4, 4}));

  const int64_t total = K * N * size;
  Outputs out(total + 3);
  EXPECT_THROWS(std::invalid_argument, buf.sample(0, out.view()), "r must be positive");
  EXPECT_THROWS(std::invalid_argument, buf.sample(total + 4, out.view()), "need at least r=");
  for (int i = 0; i < 3; ++i) {
    const int64_t n = buf.sample(7, out.view());
    EXPECT(n == std::min<int64_t>(7, total));
    out.check_rows(n, size);
  }
  const int64_t all = buf.sample(total + 3, out.view());
  EXPECT(all == total);
  out.check_rows(all, size);

  // Async draws while this rank keeps overwriting its slots.
  for (int i = 0; i < 10; ++i) {
    Outputs async(9);
    buf.start(9, async.view());
    EXPECT_THROWS(std::runtime_error, buf.start(9, async.view()), "a draw is in flight");
    add_samples(buf, rank, 100 + 30 * i, 30);
    const int64_t n = buf.wait();
    EXPECT(n == std::min<int64_t>(9, total));
    async.check_rows(n, size);
  }
  EXPECT_THROWS(std::runtime_error, buf.wait(), "no draw in flight");
  stats = buf.stats();
  EXPECT(stats.draws == 14 && stats.global_filled == total);
  EXPECT(size == 1 ? stats.bytes_read_remote == 0 : stats.bytes_read_remote > 0);
  MPI_Barrier(comm);

  // where: (owner, slot) per row; read() of the local ones gives the same rows; write_extras.
  {
    Outputs drawn(total), local(total);
    std::vector<int64_t> where(2 * total, -1);
    Output view = drawn.view();
    view.where = where.data();
    const int64_t n = buf.sample(total, view);
    std::vector<int64_t> mine;
    std::vector<int64_t> rows;
    for (int64_t k = 0; k < n; ++k)
      if (where[2 * k] == rank) mine.push_back(where[2 * k + 1]), rows.push_back(k);
    EXPECT(static_cast<int64_t>(mine.size()) == K * N);
    buf.read(mine.data(), static_cast<int64_t>(mine.size()), local.view());
    for (size_t j = 0; j < mine.size(); ++j) {
      const auto k = rows[j];
      EXPECT(local.y[j] == drawn.y[k] &&
             std::equal(local.x.begin() + j * kBytes, local.x.begin() + (j + 1) * kBytes, drawn.x.begin() + k * kBytes));
    }
    std::vector<float> fresh(mine.size() * E, 0.25f);
    buf.write_extras(mine.data(), static_cast<int64_t>(mine.size()), fresh.data());
    Outputs again(total);
    buf.read(mine.data(), static_cast<int64_t>(mine.size()), again.view());
    EXPECT(std::all_of(again.e.begin(), again.e.begin() + mine.size() * E, [](float v) { return v == 0.25f; }));
    const int64_t outside = K * N, negative_slot = -1;
    EXPECT_THROWS(std::invalid_argument, buf.read(&outside, 1, again.view()), "slots must be in [0, 12), got 12");
    EXPECT_THROWS(std::invalid_argument, buf.write_extras(&negative_slot, 1, fresh.data()), "got -1");
    buf.write_extras(mine.data(), static_cast<int64_t>(mine.size()), local.e.data());  // put them back
    MPI_Barrier(comm);
  }

  // save / load into a buffer of another seed: same contents and later draws.
  const auto& l = buf.layout();
  std::vector<std::byte> samples(l.slots * l.sample_bytes);
  std::vector<int64_t> labels(l.slots);
  std::vector<float> extras(l.slots * E);
  const StateView view{samples.data(), labels.data(), extras.data()};
  const PolicyCounters counters = buf.save(view);
  Buffer copy(config(99), comm);
  copy.load(view, counters, buf.insertion_generator_state(), buf.draw_generator_state());
  EXPECT(copy.insertion_generator_state() == buf.insertion_generator_state());
  for (int i = 0; i < 3; ++i) {
    Outputs a(6), b(6);
    EXPECT(buf.sample(6, a.view()) == copy.sample(6, b.view()));
    EXPECT(a.x == b.x && a.y == b.y && a.e == b.e);
  }
  PolicyCounters wrong = counters;
  wrong.filled[0] = 1;
  EXPECT_THROWS(std::invalid_argument, copy.load(view, wrong, buf.insertion_generator_state(), buf.draw_generator_state()),
                "class 0 has ");
  copy.close();

  // close with a draw in flight waits for it; later calls raise; close is idempotent.
  Outputs last(4);
  buf.start(4, last.view());
  buf.close();
  EXPECT(buf.closed());
  EXPECT_THROWS(std::runtime_error, buf.sample(1, last.view()), "buffer is closed");
  EXPECT_THROWS(std::runtime_error, buf.stats(), "buffer is closed");
  buf.close();

  // The destructor alone (no close) returns: it waits for the draw and frees nothing collective.
  {
    Outputs o(4);  // declared first: it must outlive the draw
    Buffer forgotten(config(), comm);
    add_samples(forgotten, rank, 0, 6);
    forgotten.start(4, o.view());
  }
  MPI_Barrier(comm);
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (provided < MPI_THREAD_MULTIPLE) {
    std::fprintf(stderr, "MPI does not provide MPI_THREAD_MULTIPLE\n");
    ++failures;
  }
  try {
    test_generator();
    test_reservoir();
    test_adaptive();
    test_sampler();
    test_worker();
    for (int64_t bytes : {int64_t{40}, Transport::kRunGetBytes + 8}) {
      kBytes = bytes;
      test_buffer(MPI_COMM_WORLD, Policy::fixed);
      test_buffer(MPI_COMM_WORLD, Policy::adaptive);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "rank %d: unexpected exception: %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  int total = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) std::printf("test_native: %s (%d failed checks)\n", total ? "FAILED" : "ok", total);
  MPI_Finalize();
  return total ? 1 : 0;
}
