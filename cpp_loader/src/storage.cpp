#include "storage.hpp"

#include <algorithm>
#include <cstring>

namespace cpp_loader {

Layout Layout::of(const Config& config) {
  Layout l;
  l.slots = config.slots();
  l.sample_bytes = config.sample_bytes();
  l.num_extras = config.num_extras;
  l.labels_offset = (l.slots * l.sample_bytes + 7) / 8 * 8;
  l.extras_offset = l.labels_offset + l.slots * 8;
  l.total_bytes = l.extras_offset + l.slots * l.extras_bytes();
  return l;
}

Storage::Storage(const Config& config, MPI_Comm comm) : layout_(Layout::of(config)) {
  mpi::Info info;
  mpi::check(MPI_Info_create(info.out()), "MPI_Info_create");
  // Hints: osc/sm may then place each slice in memory local to its owner; all slices alike.
  mpi::check(MPI_Info_set(info.get(), "alloc_shared_noncontig", "true"), "MPI_Info_set");
  mpi::check(MPI_Info_set(info.get(), "same_size", "true"), "MPI_Info_set");
  mpi::check(MPI_Info_set(info.get(), "same_disp_unit", "true"), "MPI_Info_set");
  void* base = nullptr;
  mpi::check(MPI_Win_allocate(static_cast<MPI_Aint>(layout_.total_bytes), 1, info.get(), comm,
                              &base, win_.out()),
             "MPI_Win_allocate");
  mpi::check(MPI_Win_set_errhandler(win_.get(), MPI_ERRORS_RETURN), "MPI_Win_set_errhandler");
  base_ = static_cast<std::byte*>(base);
  // Nobody reads an unfilled slot (fill counts say which are filled), but start clean.
  std::memset(base_, 0, static_cast<size_t>(layout_.labels_offset));
  auto* labels = reinterpret_cast<int64_t*>(base_ + layout_.labels_offset);
  std::fill(labels, labels + layout_.slots, int64_t{-1});
  std::memset(base_ + layout_.extras_offset, 0, static_cast<size_t>(layout_.slots * layout_.extras_bytes()));
}

void Storage::write(int64_t slot, const std::byte* x, int64_t y, const float* extras) {
  std::memcpy(base_ + slot * layout_.sample_bytes, x, static_cast<size_t>(layout_.sample_bytes));
  std::memcpy(base_ + layout_.labels_offset + slot * 8, &y, 8);
  write_extras(slot, extras);
}

void Storage::write_extras(int64_t slot, const float* extras) {
  if (layout_.num_extras)
    std::memcpy(base_ + layout_.extras_offset + slot * layout_.extras_bytes(), extras,
                static_cast<size_t>(layout_.extras_bytes()));
}

void Storage::read(int64_t slot, Row out) const {
  std::memcpy(out.x, base_ + slot * layout_.sample_bytes, static_cast<size_t>(layout_.sample_bytes));
  std::memcpy(out.y, base_ + layout_.labels_offset + slot * 8, 8);
  if (layout_.num_extras)
    std::memcpy(out.extras, base_ + layout_.extras_offset + slot * layout_.extras_bytes(),
                static_cast<size_t>(layout_.extras_bytes()));
}

void Storage::read_all(std::byte* samples, int64_t* labels, float* extras) const {
  std::memcpy(samples, base_, static_cast<size_t>(layout_.slots * layout_.sample_bytes));
  std::memcpy(labels, base_ + layout_.labels_offset, static_cast<size_t>(layout_.slots * 8));
  if (layout_.num_extras)
    std::memcpy(extras, base_ + layout_.extras_offset, static_cast<size_t>(layout_.slots * layout_.extras_bytes()));
}

void Storage::write_all(const std::byte* samples, const int64_t* labels, const float* extras) {
  std::memcpy(base_, samples, static_cast<size_t>(layout_.slots * layout_.sample_bytes));
  std::memcpy(base_ + layout_.labels_offset, labels, static_cast<size_t>(layout_.slots * 8));
  if (layout_.num_extras)
    std::memcpy(base_ + layout_.extras_offset, extras, static_cast<size_t>(layout_.slots * layout_.extras_bytes()));
}

void Storage::free() {
  base_ = nullptr;
  win_.free("MPI_Win_free");
}

}  // namespace cpp_loader
