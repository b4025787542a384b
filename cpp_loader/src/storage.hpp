// Storage: this rank's slice of the buffer, exposed in one MPI window.
//
// Layout (disp_unit 1), structure of arrays over the S slots (fixed: S = K*N, slot(c, i) =
// c*N + i; adaptive: S = M, any class in any slot, its label beside it):
//   [samples: S*sample_bytes][pad to 8][labels: S int64][extras: S*E float32]
// Storage knows where a slot lives and copies bytes; who may touch a slot when (locks) is the
// buffer's business.
#pragma once

#include <cstddef>
#include <cstdint>

#include "config.hpp"
#include "mpi_raii.hpp"

namespace cpp_loader {

struct Layout {
  int64_t slots = 0;
  int64_t sample_bytes = 0;
  int64_t num_extras = 0;
  int64_t labels_offset = 0;
  int64_t extras_offset = 0;
  int64_t total_bytes = 0;

  static Layout of(const Config& config);
  int64_t extras_bytes() const { return num_extras * static_cast<int64_t>(sizeof(float)); }
  int64_t slot_bytes() const { return sample_bytes + 8 + extras_bytes(); }  // all three regions
};

// Where one output row (or one input sample) lives in caller memory.
struct Row {
  std::byte* x;
  int64_t* y;
  float* extras;  // null when num_extras == 0
};

class Storage {
 public:
  // Collective over comm: MPI_Win_allocate with MPI_ERRORS_RETURN; slots zeroed, labels -1.
  Storage(const Config& config, MPI_Comm comm);

  const Layout& layout() const { return layout_; }
  MPI_Win win() const { return win_.get(); }

  // Caller holds the locks that make these safe (see Buffer).
  void write(int64_t slot, const std::byte* x, int64_t y, const float* extras);
  void read(int64_t slot, Row out) const;
  // The extras of one slot only (num_extras floats); a no-op when num_extras == 0.
  void write_extras(int64_t slot, const float* extras);
  // The whole slice, region by region (state()/load_state()); extras null when num_extras == 0.
  void read_all(std::byte* samples, int64_t* labels, float* extras) const;
  void write_all(const std::byte* samples, const int64_t* labels, const float* extras);

  // Collective MPI_Win_free.
  void free();

 private:
  Layout layout_;
  mpi::Win win_;
  std::byte* base_ = nullptr;
};

}  // namespace cpp_loader
