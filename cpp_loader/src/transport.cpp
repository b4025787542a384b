#include "transport.hpp"

#include <vector>

namespace cpp_loader {
namespace {

mpi::Datatype contiguous_bytes(int64_t bytes) {
  mpi::Datatype t;
  mpi::check(MPI_Type_contiguous(static_cast<int>(bytes), MPI_BYTE, t.out()), "MPI_Type_contiguous");
  mpi::check(MPI_Type_commit(t.out()), "MPI_Type_commit");
  return t;
}

// Runs of consecutive slots, as (first slot, length).
struct Runs {
  std::vector<int64_t> first;
  std::vector<int> length;
};

Runs runs_of(const int64_t* slots, int64_t count) {
  Runs runs;
  for (int64_t k = 0; k < count; ++k) {
    if (k > 0 && slots[k] == slots[k - 1] + 1) {
      ++runs.length.back();
    } else {
      runs.first.push_back(slots[k]);
      runs.length.push_back(1);
    }
  }
  return runs;
}

// The target-side type: the runs of a region whose slot s starts at offset + s * unit_bytes.
mpi::Datatype region_type(const Runs& runs, int64_t offset, int64_t unit_bytes, MPI_Datatype unit) {
  std::vector<MPI_Aint> displacements(runs.first.size());
  for (size_t k = 0; k < runs.first.size(); ++k)
    displacements[k] = static_cast<MPI_Aint>(offset + runs.first[k] * unit_bytes);
  mpi::Datatype t;
  mpi::check(MPI_Type_create_hindexed(static_cast<int>(runs.first.size()), runs.length.data(),
                                      displacements.data(), unit, t.out()),
             "MPI_Type_create_hindexed");
  mpi::check(MPI_Type_commit(t.out()), "MPI_Type_commit");
  return t;
}

}  // namespace

Transport::Transport(const Layout& layout, MPI_Win win)
    : layout_(layout), win_(win), sample_unit_(contiguous_bytes(layout.sample_bytes)) {
  if (layout.num_extras) extras_unit_ = contiguous_bytes(layout.extras_bytes());
}

void Transport::get(int target, const int64_t* slots, int64_t count, Row first) {
  if (count == 0) return;
  const Runs runs = runs_of(slots, count);
  const bool per_run = layout_.sample_bytes >= kRunGetBytes;
  mpi::Datatype samples;
  if (!per_run) samples = region_type(runs, 0, layout_.sample_bytes, sample_unit_.get());
  const mpi::Datatype labels = region_type(runs, layout_.labels_offset, 8, MPI_INT64_T);
  mpi::Datatype extras;
  if (layout_.num_extras)
    extras = region_type(runs, layout_.extras_offset, layout_.extras_bytes(), extras_unit_.get());

  const int n = static_cast<int>(count);
  mpi::LockEpoch epoch(win_, target, MPI_LOCK_SHARED);
  if (per_run) {
    std::byte* row = first.x;
    for (size_t k = 0; k < runs.first.size(); ++k) {
      const auto disp = static_cast<MPI_Aint>(runs.first[k] * layout_.sample_bytes);
      mpi::check(MPI_Get(row, runs.length[k], sample_unit_.get(), target, disp, runs.length[k], sample_unit_.get(),
                         win_),
                 "MPI_Get");
      row += runs.length[k] * layout_.sample_bytes;
    }
  } else {
    mpi::check(MPI_Get(first.x, n, sample_unit_.get(), target, 0, 1, samples.get(), win_), "MPI_Get");
  }
  mpi::check(MPI_Get(first.y, n, MPI_INT64_T, target, 0, 1, labels.get(), win_), "MPI_Get");
  if (layout_.num_extras)
    mpi::check(MPI_Get(first.extras, n, extras_unit_.get(), target, 0, 1, extras.get(), win_), "MPI_Get");
  epoch.unlock();
}

}  // namespace cpp_loader
