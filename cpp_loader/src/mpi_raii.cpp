#include "mpi_raii.hpp"

#include <chrono>
#include <numeric>
#include <thread>

namespace cpp_loader::mpi {

Error::Error(const std::string& call, int code)
    : std::runtime_error(call + " failed: " + error_string(code)), code_(code) {}

std::string error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS)
    return "MPI error code " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

void check(int rc, const char* call) {
  if (rc != MPI_SUCCESS) throw Error(call, rc);
}

bool initialized_and_not_finalized() noexcept {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

LockEpoch::LockEpoch(MPI_Win win, int target, int lock_type)
    : win_(win), target_(target), held_(false) {
  check(MPI_Win_lock(lock_type, target, 0, win), "MPI_Win_lock");
  held_ = true;
}

LockEpoch::~LockEpoch() {
  if (held_) MPI_Win_unlock(target_, win_);  // unwinding: the first error is already in flight
}

void LockEpoch::unlock() {
  held_ = false;
  check(MPI_Win_unlock(target_, win_), "MPI_Win_unlock");
}

std::vector<std::string> allgather_strings(MPI_Comm comm, const std::string& mine) {
  int size = 0;
  check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<size_t>(size));
  check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, comm), "MPI_Allgather");
  std::vector<int> offsets(static_cast<size_t>(size), 0);
  std::partial_sum(lengths.begin(), lengths.end() - 1, offsets.begin() + 1);
  std::string all(static_cast<size_t>(offsets.back() + lengths.back()), '\0');
  check(MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
                       MPI_CHAR, comm),
        "MPI_Allgatherv");
  std::vector<std::string> out;
  for (int p = 0; p < size; ++p) out.push_back(all.substr(offsets[p], lengths[p]));
  return out;
}

void wait_yielding(MPI_Request& request, const char* what) {
  constexpr int kSpins = 200;
  for (int i = 0;; ++i) {
    int done = 0;
    check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), what);
    if (done) return;
    if (i >= kSpins) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace cpp_loader::mpi
