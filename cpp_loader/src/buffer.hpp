// Buffer: a rank's slice of the global rehearsal buffer, composing storage (the window),
// the reservoir policy (insertion), the global sampler (what to read), the transport (remote
// gets) and a worker thread (asynchronous draws).
//
// Locks. slots_mutex_ guards this rank's slots and counters between the caller's thread
// (add, load_state, the fill snapshot) and the worker (local copies). Owner writes also hold
// MPI_Win_lock(EXCLUSIVE, own rank), so remote readers, which hold MPI_Win_lock(SHARED,
// target), never see a half-written slot. The worker never locks its own rank (it memcpys
// local slots) and the caller's thread only ever locks its own rank: MPI forbids one process
// holding two locks on the same target. call_mutex_ serialises the public calls (wait() only
// takes it briefly, never while blocked).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "config.hpp"
#include "mpi_raii.hpp"
#include "reservoir.hpp"
#include "sampler.hpp"
#include "storage.hpp"
#include "transport.hpp"
#include "worker.hpp"

namespace cpp_loader {

// A label outside [0, num_classes) (fixed), or negative (adaptive): Python sees cpp_loader.LabelError (IndexError and ValueError).
class LabelError : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

// Output arrays of a draw (or of read()): `rows` rows each (rows >= r).
struct Output {
  std::byte* x;
  int64_t* y;
  float* extras;  // null when num_extras == 0
  int64_t rows;
  int64_t* where = nullptr;  // optional, 2 per row: (owner rank, slot on that rank)
};

struct Stats {
  std::vector<int64_t> classes;  // labels, in the order of the two vectors below
  std::vector<int64_t> seen_per_class;
  std::vector<int64_t> filled_per_class;
  int64_t filled = 0;
  int64_t capacity = 0;
  std::vector<int64_t> filled_per_rank;  // as of the last draw
  int64_t global_filled = 0;             // as of the last draw
  double last_draw_seconds = 0.0;
  int64_t bytes_read_remote = 0;
  int64_t bytes_read_local = 0;
  int64_t draws = 0;
};

// A rank's slice as plain memory (state()/load_state()); caller-owned arrays of the sizes the
// layout gives: samples slots*sample_bytes, labels slots, extras slots*num_extras.
struct StateView {
  std::byte* samples;
  int64_t* labels;
  float* extras;
};

class Buffer {
 public:
  // Collective over `comm` (duplicated, so the buffer's traffic never mixes with the caller's).
  // `argument_error` carries a problem the caller found in its arguments: every rank raises
  // std::invalid_argument naming it, as it does when ranks disagree on the configuration.
  Buffer(const Config& config, MPI_Comm comm, const std::string& argument_error = "");
  ~Buffer();  // fallback only: never calls a collective (see close())
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const Config& config() const { return config_; }
  const Layout& layout() const { return storage_.layout(); }
  bool closed() const { return closed_; }
  bool thread_multiple() const { return thread_level_ >= MPI_THREAD_MULTIPLE; }

  // Local. x: n samples; y: n labels, in [0, K) (fixed) or >= 0 (adaptive; below K when K > 0),
  // all checked before anything is stored;
  // extras: n * num_extras floats, or null when num_extras == 0.
  // slots (optional, n entries): the slot each sample went to, or -1 when it was not kept or a
  // later sample of the same call took its slot (only the last one is held).
  void add(const std::byte* x, const int64_t* y, const float* extras, int64_t n, int64_t* slots = nullptr);
  // Local. Copies local slots[0..m) into rows [0, m) of `out` (out.where ignored), under
  // slots_mutex_. std::invalid_argument for a slot outside [0, capacity) or empty.
  void read(const int64_t* slots, int64_t m, Output out) const;
  // Local. Rewrites the extras of local slots[0..m) (m * num_extras floats; duplicates: the
  // last wins) under slots_mutex_ and MPI_Win_lock(EXCLUSIVE, own rank), as add() writes, so
  // no remote reader sees a half-rewritten row. std::invalid_argument when num_extras == 0,
  // or for a slot outside [0, capacity) or empty; nothing is written then.
  void write_extras(const int64_t* slots, int64_t m, const float* extras);
  // Collective, synchronous: the draw runs on the calling thread, then a barrier.
  int64_t sample(int64_t r, Output out);
  // Collective, asynchronous: the draw runs on the worker; `out` must stay valid until wait().
  void start(int64_t r, Output out);
  int64_t wait();
  bool in_flight() const { return in_flight_; }

  Stats stats() const;
  std::string insertion_generator_state() const;
  std::string draw_generator_state() const;
  PolicyCounters save(StateView view) const;  // the slots into `view`, and the counters
  void load(StateView view, const PolicyCounters& counters, const std::string& insertion_generator,
            const std::string& draw_generator);

  // Collective: waits for a draw in flight, stops the worker, frees the window and the
  // communicator. Idempotent.
  void close();

 private:
  void ensure_open() const;
  void ensure_idle() const;
  void check_draw(int64_t r, const Output& out) const;  // open, idle, r and outputs valid
  void check_slots(const int64_t* slots, int64_t m) const;  // in range and filled; slots_mutex_ held
  std::vector<int32_t> snapshot_fill() const;
  int64_t draw(int64_t r, Output out, const std::vector<int32_t>& snapshot);

  Config config_;
  mpi::Comm comm_;
  int rank_ = 0;
  int world_size_ = 1;
  int thread_level_ = MPI_THREAD_SINGLE;
  Storage storage_;
  Transport transport_;
  std::unique_ptr<InsertionPolicy> policy_;
  GlobalSampler sampler_;

  mutable std::mutex call_mutex_;
  mutable std::mutex slots_mutex_;
  mutable std::mutex stats_mutex_;
  Stats draw_stats_;  // the draw-side fields only, under stats_mutex_
  std::atomic<bool> in_flight_{false};
  std::atomic<bool> closed_{false};
  Worker worker_;
};

}  // namespace cpp_loader
