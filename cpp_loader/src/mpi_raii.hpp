// Move-only RAII handles for the MPI objects the buffer owns, and checked calls.
//
// Every MPI call goes through check(): a non-success code becomes mpi::Error carrying
// MPI_Error_string. Communicators and windows are freed collectively (close()), never by a
// destructor: a destructor cannot know whether the other ranks will join, so it leaks instead
// of hanging. Datatypes and info objects are local and freed by their destructors.
#pragma once

#include <mpi.h>

#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace cpp_loader::mpi {

// An MPI call failed; what() names the call and carries MPI_Error_string.
class Error : public std::runtime_error {
 public:
  Error(const std::string& call, int code);
  int code() const noexcept { return code_; }

 private:
  int code_;
};

std::string error_string(int code);
void check(int rc, const char* call);
bool initialized_and_not_finalized() noexcept;

struct CommTraits {
  using type = MPI_Comm;
  static type null() noexcept { return MPI_COMM_NULL; }
  static int free(type* h) noexcept { return MPI_Comm_free(h); }
  static constexpr bool local_free = false;  // collective
};
struct WinTraits {
  using type = MPI_Win;
  static type null() noexcept { return MPI_WIN_NULL; }
  static int free(type* h) noexcept { return MPI_Win_free(h); }
  static constexpr bool local_free = false;  // collective
};
struct DatatypeTraits {
  using type = MPI_Datatype;
  static type null() noexcept { return MPI_DATATYPE_NULL; }
  static int free(type* h) noexcept { return MPI_Type_free(h); }
  static constexpr bool local_free = true;
};
struct InfoTraits {
  using type = MPI_Info;
  static type null() noexcept { return MPI_INFO_NULL; }
  static int free(type* h) noexcept { return MPI_Info_free(h); }
  static constexpr bool local_free = true;
};

template <class Traits>
class Handle {
 public:
  using type = typename Traits::type;

  Handle() noexcept : h_(Traits::null()) {}
  explicit Handle(type h) noexcept : h_(h) {}
  Handle(Handle&& other) noexcept : h_(std::exchange(other.h_, Traits::null())) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      destroy();
      h_ = std::exchange(other.h_, Traits::null());
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { destroy(); }

  type get() const noexcept { return h_; }
  type* out() noexcept { return &h_; }  // for MPI calls that create the handle
  explicit operator bool() const noexcept { return h_ != Traits::null(); }

  // Checked free (collective for communicators and windows).
  void free(const char* call) {
    if (h_ != Traits::null()) check(Traits::free(&h_), call);
    h_ = Traits::null();
  }

 private:
  // Local handles are freed while MPI is alive; collective ones are left to MPI_Finalize.
  void destroy() noexcept {
    if (h_ != Traits::null() && Traits::local_free && initialized_and_not_finalized())
      Traits::free(&h_);
    h_ = Traits::null();
  }
  type h_;
};

using Comm = Handle<CommTraits>;
using Win = Handle<WinTraits>;
using Datatype = Handle<DatatypeTraits>;
using Info = Handle<InfoTraits>;

// A passive-target access epoch on one target: MPI_Win_lock now, MPI_Win_unlock by unlock()
// (checked; completes the RMA operations of the epoch) or, on unwinding, by the destructor.
class LockEpoch {
 public:
  LockEpoch(MPI_Win win, int target, int lock_type);
  LockEpoch(const LockEpoch&) = delete;
  LockEpoch& operator=(const LockEpoch&) = delete;
  ~LockEpoch();
  void unlock();

 private:
  MPI_Win win_;
  int target_;
  bool held_;
};

// Every rank's string, in rank order (two collectives: lengths, then the characters).
std::vector<std::string> allgather_strings(MPI_Comm comm, const std::string& mine);

// Complete a nonblocking operation without burning a core: test in a short spin, then sleep
// between tests. Blocking MPI calls busy-poll, and a background thread that spins while its
// peers are still training steals the core the training runs on.
void wait_yielding(MPI_Request& request, const char* what);

}  // namespace cpp_loader::mpi
