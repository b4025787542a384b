// The Python binding of Buffer: array checks (dtype, shape, contiguity, writability) and the
// GIL released around every call that may block.
#pragma once

#include <pybind11/pybind11.h>

namespace cpp_loader {
void bind_buffer(pybind11::module_& m);
}
