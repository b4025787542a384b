#include "buffer.hpp"

#include <chrono>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace cpp_loader {
namespace {

constexpr const char* kClosed = "buffer is closed";
constexpr const char* kInFlight = "a draw is in flight: call wait() first";

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts(1);
  for (char ch : text) {
    if (ch == sep)
      parts.emplace_back();
    else
      parts.back().push_back(ch);
  }
  return parts;
}

// "" when every rank described the same configuration, else which fields differ where.
std::string mismatch(const std::vector<std::string>& described) {
  const auto reference = split(described[0], ';');
  std::string message;
  for (size_t f = 0; f < reference.size(); ++f)
    for (size_t p = 1; p < described.size(); ++p) {
      const auto fields = split(described[p], ';');
      if (fields[f] != reference[f]) {
        message += (message.empty() ? "" : "; ") + std::string("rank 0 has ") + reference[f] +
                   " but rank " + std::to_string(p) + " has " + fields[f];
        break;
      }
    }
  return message.empty() ? "" : "inconsistent Buffer arguments across ranks: " + message;
}

// Duplicates `comm` and checks, collectively, the arguments of every rank: each rank raises
// the same std::invalid_argument if any rank's arguments are invalid or ranks disagree.
mpi::Comm checked_dup(const Config& config, MPI_Comm comm, const std::string& argument_error) {
  if (comm == MPI_COMM_NULL) throw std::invalid_argument("comm is MPI_COMM_NULL");
  int inter = 0;
  mpi::check(MPI_Comm_test_inter(comm, &inter), "MPI_Comm_test_inter");
  if (inter) throw std::invalid_argument("comm must be an intracommunicator");
  mpi::Comm dup;
  mpi::check(MPI_Comm_dup(comm, dup.out()), "MPI_Comm_dup");
  mpi::check(MPI_Comm_set_errhandler(dup.get(), MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");

  const auto problems = mpi::allgather_strings(dup.get(), argument_error.empty() ? config.problem() : argument_error);
  std::string message;
  for (size_t p = 0; p < problems.size(); ++p) {
    if (problems[p].empty()) continue;
    const std::string where = problems.size() == 1 ? "" : " on rank " + std::to_string(p);
    message += (message.empty() ? "" : "; ") + ("invalid Buffer arguments" + where) + ": " + problems[p];
  }
  if (message.empty()) message = mismatch(mpi::allgather_strings(dup.get(), config.describe()));
  if (!message.empty()) {
    dup.free("MPI_Comm_free");
    throw std::invalid_argument(message);
  }
  return dup;
}

int comm_rank(const mpi::Comm& comm) {
  int rank = 0;
  mpi::check(MPI_Comm_rank(comm.get(), &rank), "MPI_Comm_rank");
  return rank;
}

int comm_size(const mpi::Comm& comm) {
  int size = 0;
  mpi::check(MPI_Comm_size(comm.get(), &size), "MPI_Comm_size");
  return size;
}

int thread_level() {
  int level = MPI_THREAD_SINGLE;
  mpi::check(MPI_Query_thread(&level), "MPI_Query_thread");
  return level;
}

const char* thread_level_name(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    default: return "MPI_THREAD_MULTIPLE";
  }
}

std::unique_ptr<InsertionPolicy> make_policy(const Config& config, int rank) {
  if (config.policy == Policy::adaptive) return std::make_unique<AdaptivePolicy>(config.capacity, config.seed, rank);
  return std::make_unique<ReservoirPolicy>(config.num_classes, config.slots_per_class, config.seed, rank);
}

}  // namespace

Buffer::Buffer(const Config& config, MPI_Comm comm, const std::string& argument_error)
    : config_(config),
      comm_(checked_dup(config, comm, argument_error)),
      rank_(comm_rank(comm_)),
      world_size_(comm_size(comm_)),
      thread_level_(thread_level()),
      storage_(config_, comm_.get()),
      transport_(storage_.layout(), storage_.win()),
      policy_(make_policy(config_, rank_)),
      sampler_(config_.blocks(), policy_->block_stride(), config.seed, rank_) {
  draw_stats_.filled_per_rank.assign(static_cast<size_t>(world_size_), 0);
}

Buffer::~Buffer() { worker_.stop(); }

void Buffer::ensure_open() const {
  if (closed_) throw std::runtime_error(kClosed);
}

void Buffer::ensure_idle() const {
  if (in_flight_) throw std::runtime_error(kInFlight);
}

void Buffer::check_draw(int64_t r, const Output& out) const {
  ensure_open();
  ensure_idle();
  if (r <= 0) throw std::invalid_argument("r must be positive, got " + std::to_string(r));
  if (out.rows < r)
    throw std::invalid_argument("output arrays have " + std::to_string(out.rows) +
                                " rows, need at least r=" + std::to_string(r));
  if (!out.x || !out.y || (config_.num_extras && !out.extras))
    throw std::invalid_argument("an output array is missing");
}

void Buffer::add(const std::byte* x, const int64_t* y, const float* extras, int64_t n, int64_t* slots) {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  if (n < 0) throw std::invalid_argument("n must be >= 0, got " + std::to_string(n));
  if (n == 0) return;
  if (!x || !y || (config_.num_extras && !extras)) throw std::invalid_argument("an input array is missing");
  const bool bounded = config_.policy == Policy::fixed || config_.num_classes > 0;
  for (int64_t i = 0; i < n; ++i) {
    if (y[i] >= 0 && (!bounded || y[i] < config_.num_classes)) continue;
    const std::string which = "label " + std::to_string(y[i]) + " (sample " + std::to_string(i) + ")";
    if (bounded) throw LabelError(which + " is outside [0, " + std::to_string(config_.num_classes) + ")");
    throw LabelError(which + " is negative: labels are integers >= 0");
  }

  const int64_t sample_bytes = layout().sample_bytes;
  std::unordered_map<int64_t, int64_t> holder;  // slot -> the sample of this call that holds it
  std::lock_guard<std::mutex> lock(slots_mutex_);
  mpi::LockEpoch epoch(storage_.win(), rank_, MPI_LOCK_EXCLUSIVE);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t slot = policy_->place(y[i]);
    if (slot >= 0)
      storage_.write(slot, x + i * sample_bytes, y[i], extras ? extras + i * config_.num_extras : nullptr);
    if (!slots) continue;
    slots[i] = slot;
    if (slot < 0) continue;
    const auto [it, first] = holder.try_emplace(slot, i);
    if (!first) slots[std::exchange(it->second, i)] = -1;  // overwritten by sample i
  }
  epoch.unlock();
}

void Buffer::check_slots(const int64_t* slots, int64_t m) const {
  const int64_t capacity = config_.slots();
  const std::vector<int32_t> fill = policy_->fill_blocks();
  const int64_t stride = policy_->block_stride();
  for (int64_t k = 0; k < m; ++k) {
    const int64_t s = slots[k];
    if (s < 0 || s >= capacity)
      throw std::invalid_argument("slots must be in [0, " + std::to_string(capacity) + "), got " + std::to_string(s));
    if (s % stride >= fill[static_cast<size_t>(s / stride)])
      throw std::invalid_argument("slot " + std::to_string(s) + " is empty");
  }
}

void Buffer::read(const int64_t* slots, int64_t m, Output out) const {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  if (m < 0) throw std::invalid_argument("m must be >= 0, got " + std::to_string(m));
  if (m == 0) return;
  if (out.rows < m)
    throw std::invalid_argument("output arrays have " + std::to_string(out.rows) + " rows, need at least " +
                                std::to_string(m));
  if (!slots || !out.x || !out.y || (config_.num_extras && !out.extras))
    throw std::invalid_argument("an array is missing");
  const Layout& l = layout();
  std::lock_guard<std::mutex> lock(slots_mutex_);
  check_slots(slots, m);
  for (int64_t k = 0; k < m; ++k)
    storage_.read(slots[k], Row{out.x + k * l.sample_bytes, out.y + k, out.extras ? out.extras + k * l.num_extras : nullptr});
}

void Buffer::write_extras(const int64_t* slots, int64_t m, const float* extras) {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  if (config_.num_extras == 0) throw std::invalid_argument("this buffer stores no extras (num_extras=0)");
  if (m < 0) throw std::invalid_argument("m must be >= 0, got " + std::to_string(m));
  if (m == 0) return;
  if (!slots || !extras) throw std::invalid_argument("an input array is missing");
  std::lock_guard<std::mutex> lock(slots_mutex_);
  check_slots(slots, m);  // all of them before anything is written
  mpi::LockEpoch epoch(storage_.win(), rank_, MPI_LOCK_EXCLUSIVE);
  for (int64_t k = 0; k < m; ++k) storage_.write_extras(slots[k], extras + k * config_.num_extras);
  epoch.unlock();
}

std::vector<int32_t> Buffer::snapshot_fill() const {
  std::lock_guard<std::mutex> slots(slots_mutex_);
  return policy_->fill_blocks();
}

int64_t Buffer::draw(int64_t r, Output out, const std::vector<int32_t>& snapshot) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto K = static_cast<int>(config_.blocks());  // fill counts per rank
  std::vector<int32_t> fill(static_cast<size_t>(world_size_) * K);
  MPI_Request gather = MPI_REQUEST_NULL;
  mpi::check(MPI_Iallgather(snapshot.data(), K, MPI_INT32_T, fill.data(), K, MPI_INT32_T, comm_.get(), &gather),
             "MPI_Iallgather");
  mpi::wait_yielding(gather, "MPI_Iallgather");
  const std::vector<SlotRef> refs = sampler_.draw(fill, r);
  const auto n = static_cast<int64_t>(refs.size());
  std::vector<int64_t> slots(refs.size());
  for (size_t k = 0; k < refs.size(); ++k) {
    slots[k] = refs[k].slot;
    if (out.where) {
      out.where[2 * k] = refs[k].rank;
      out.where[2 * k + 1] = refs[k].slot;
    }
  }

  const Layout& l = layout();
  const auto row = [&](int64_t k) {
    return Row{out.x + k * l.sample_bytes, out.y + k, out.extras ? out.extras + k * l.num_extras : nullptr};
  };
  int64_t local = 0, remote = 0;
  for (int64_t b = 0, e = 0; b < n; b = e) {  // one group of rows per rank
    const int target = refs[b].rank;
    for (e = b; e < n && refs[e].rank == target;) ++e;
    if (target == rank_) {
      std::lock_guard<std::mutex> lock(slots_mutex_);
      for (int64_t k = b; k < e; ++k) storage_.read(slots[k], row(k));
      local += e - b;
    } else {
      transport_.get(target, slots.data() + b, e - b, row(b));
      remote += e - b;
    }
  }

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(stats_mutex_);
  auto& s = draw_stats_;
  s.global_filled = 0;
  for (int p = 0; p < world_size_; ++p) {
    s.filled_per_rank[p] = 0;
    for (int c = 0; c < K; ++c) s.filled_per_rank[p] += fill[static_cast<size_t>(p) * K + c];
    s.global_filled += s.filled_per_rank[p];
  }
  s.last_draw_seconds = seconds;
  s.bytes_read_local += local * l.slot_bytes();
  s.bytes_read_remote += remote * l.slot_bytes();
  ++s.draws;
  return n;
}

int64_t Buffer::sample(int64_t r, Output out) {
  std::lock_guard<std::mutex> call(call_mutex_);
  check_draw(r, out);
  const int64_t n = draw(r, out, snapshot_fill());
  // Nobody overwrites its slots before every rank has finished reading them.
  mpi::check(MPI_Barrier(comm_.get()), "MPI_Barrier");
  return n;
}

void Buffer::start(int64_t r, Output out) {
  std::lock_guard<std::mutex> call(call_mutex_);
  check_draw(r, out);
  if (!thread_multiple())
    throw std::runtime_error(std::string("asynchronous draws need MPI initialised with MPI_THREAD_MULTIPLE, "
                                         "but MPI provides ") + thread_level_name(thread_level_) +
                             "; use sample(), or initialise MPI with MPI_THREAD_MULTIPLE "
                             "(mpi4py.rc.thread_level = 'multiple', mpi4py's default)");
  in_flight_ = true;
  worker_.submit([this, r, out, snapshot = snapshot_fill()] { return draw(r, out, snapshot); });
}

int64_t Buffer::wait() {
  {
    std::lock_guard<std::mutex> call(call_mutex_);
    ensure_open();
    if (!in_flight_) throw std::runtime_error("no draw in flight: call start() first");
  }
  // Not under call_mutex_, so another thread may add() meanwhile.
  try {
    const int64_t n = worker_.wait();
    in_flight_ = false;
    return n;
  } catch (...) {
    in_flight_ = false;
    throw;
  }
}

Stats Buffer::stats() const {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  Stats s;
  {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    s = draw_stats_;
  }
  std::lock_guard<std::mutex> lock(slots_mutex_);
  PolicyCounters counters = policy_->counters();
  s.classes = std::move(counters.classes);
  s.seen_per_class = std::move(counters.seen);
  s.filled_per_class = std::move(counters.filled);
  s.filled = policy_->filled_total();
  s.capacity = config_.slots();
  return s;
}

std::string Buffer::insertion_generator_state() const {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  std::lock_guard<std::mutex> lock(slots_mutex_);
  return policy_->generator_state();
}

std::string Buffer::draw_generator_state() const {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  ensure_idle();
  return sampler_.generator_state();
}

PolicyCounters Buffer::save(StateView view) const {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  std::lock_guard<std::mutex> lock(slots_mutex_);
  storage_.read_all(view.samples, view.labels, view.extras);
  return policy_->counters();
}

void Buffer::load(StateView view, const PolicyCounters& counters, const std::string& insertion_generator,
                  const std::string& draw_generator) {
  std::lock_guard<std::mutex> call(call_mutex_);
  ensure_open();
  ensure_idle();
  load_generator(draw_generator, "draw");  // validate everything before changing anything
  for (size_t c = 0; c < counters.filled.size(); ++c)
    if (counters.filled[c] < 0 || counters.filled[c] > config_.slots())
      throw std::invalid_argument("filled count " + std::to_string(counters.filled[c]) + " of class " +
                                  std::to_string(counters.classes.size() > c ? counters.classes[c] : -1) +
                                  " is outside [0, " + std::to_string(config_.slots()) + "]");
  std::lock_guard<std::mutex> lock(slots_mutex_);
  policy_->restore(view.labels, counters, insertion_generator);  // checks the counters, or throws
  sampler_.restore(draw_generator);
  mpi::LockEpoch epoch(storage_.win(), rank_, MPI_LOCK_EXCLUSIVE);
  storage_.write_all(view.samples, view.labels, view.extras);
  epoch.unlock();
}

void Buffer::close() {
  if (closed_) return;
  if (in_flight_) {
    try {
      worker_.wait();
    } catch (...) {  // nobody asked for this draw's outcome any more
    }
    in_flight_ = false;
  }
  std::lock_guard<std::mutex> call(call_mutex_);
  if (closed_) return;
  closed_ = true;
  worker_.stop();
  if (!mpi::initialized_and_not_finalized()) return;  // MPI_Finalize has freed everything
  storage_.free();
  comm_.free("MPI_Comm_free");
}

}  // namespace cpp_loader
