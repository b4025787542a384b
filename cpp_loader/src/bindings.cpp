// cpp_loader._core: the native rehearsal buffer. The public surface is cpp_loader.Buffer.
#include <mpi.h>
#include <pybind11/pybind11.h>

#include <string>

#include "buffer.hpp"
#include "mpi_raii.hpp"
#include "py_buffer.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_core, m) {
  m.doc() = "Native rehearsal buffer: MPI-3 one-sided global sampling (private; use cpp_loader.Buffer).";
  py::register_exception<cpp_loader::mpi::Error>(m, "MPIError", PyExc_RuntimeError);
  // Both an IndexError (std::out_of_range) and a ValueError (a bad argument), like buffers.LabelError.
  static py::handle label_error = PyErr_NewException(
      "cpp_loader.LabelError", py::make_tuple(py::handle(PyExc_IndexError), py::handle(PyExc_ValueError)).ptr(),
      nullptr);
  m.attr("LabelError") = label_error;
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const cpp_loader::LabelError& e) {
      PyErr_SetString(label_error.ptr(), e.what());
    }
  });
  m.def("mpi_library_version", [] {
    char text[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(text, &length);
    return std::string(text, static_cast<size_t>(length));
  }, "The MPI library this extension was built against (must be the one mpi4py uses).");
  cpp_loader::bind_buffer(m);
}
