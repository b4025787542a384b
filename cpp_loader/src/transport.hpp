// Transport: the one-sided reads of remote slots.
//
// The reads of one target rank form one passive-target epoch (MPI_Win_lock SHARED ... unlock),
// into a contiguous range of output rows. Adjacent slots are merged into runs. Labels and
// extras (and samples below kRunGetBytes) are read with one MPI_Get per region whose target
// side is an hindexed datatype over the runs. Samples of kRunGetBytes or more are read with one
// contiguous MPI_Get per run instead: Open MPI's osc/sm moves a non-contiguous target datatype
// through its convertor at about half of memcpy's speed, while a contiguous get is a memcpy
// (measured in README.md); on RDMA networks a derived datatype is split into one get per block
// anyway. Unlock completes the gets. The owner writes under an EXCLUSIVE lock on its own
// window, so a get never sees a half-written slot.
#pragma once

#include <cstdint>

#include "mpi_raii.hpp"
#include "storage.hpp"

namespace cpp_loader {

class Transport {
 public:
  // Samples at least this large are read with one contiguous MPI_Get per run of slots.
  static constexpr int64_t kRunGetBytes = 32 * 1024;

  // Commits the per-slot datatypes of each region; `win` stays owned by Storage.
  Transport(const Layout& layout, MPI_Win win);

  // Copies slots[0..count) (sorted, distinct) of `target` into rows first, first+1, ...
  void get(int target, const int64_t* slots, int64_t count, Row first);

 private:
  Layout layout_;
  MPI_Win win_;
  mpi::Datatype sample_unit_;
  mpi::Datatype extras_unit_;
};

}  // namespace cpp_loader
