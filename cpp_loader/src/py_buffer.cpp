#include "py_buffer.hpp"

#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "buffer.hpp"

namespace py = pybind11;

namespace cpp_loader {
namespace {

std::string shape_of(const py::array& a) {
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  return shape_string(shape);
}

std::string dtype_of(const py::array& a) { return py::str(a.dtype()); }

// Checks dtype, C-contiguity, writability and the trailing dimensions of `a`; returns its
// number of rows. expected_tail is the shape after the first dimension.
int64_t check_array(const py::array& a, const char* name, const std::string& dtype,
                    const std::vector<int64_t>& expected_tail, bool writable) {
  std::string expected = "(n";
  for (int64_t d : expected_tail) expected += ", " + std::to_string(d);
  expected += expected_tail.empty() ? ",)" : ")";
  if (dtype_of(a) != dtype)
    throw std::invalid_argument(std::string(name) + " has dtype " + dtype_of(a) + ", expected " + dtype);
  bool shape_ok = a.ndim() == static_cast<py::ssize_t>(expected_tail.size() + 1);
  for (size_t i = 0; shape_ok && i < expected_tail.size(); ++i) shape_ok = a.shape(i + 1) == expected_tail[i];
  if (!shape_ok)
    throw std::invalid_argument(std::string(name) + " has shape " + shape_of(a) + ", expected " + expected);
  if (!(a.flags() & py::array::c_style))
    throw std::invalid_argument(std::string(name) + " must be C-contiguous (got strides of a view); "
                                "pass np.ascontiguousarray(" + name + ")");
  if (writable && !a.writeable()) throw std::invalid_argument(std::string(name) + " is read-only");
  return a.shape(0);
}

// The output arrays of a draw or a read, `need` rows at least (`what` names it in messages);
// out_where (optional): (rows, 2) int64.
Output check_outputs(const Buffer& b, int64_t need, const std::string& what, py::array out_x, py::array out_y,
                     const py::object& out_extras, const py::object& out_where = py::none()) {
  const Config& c = b.config();
  const int64_t rows_x = check_array(out_x, "out_x", dtype_name(c.dtype), c.sample_shape, true);
  const int64_t rows_y = check_array(out_y, "out_y", "int64", {}, true);
  int64_t rows = std::min(rows_x, rows_y);
  float* extras = nullptr;
  if (c.num_extras) {
    if (out_extras.is_none())
      throw std::invalid_argument("out_extras is required (num_extras=" + std::to_string(c.num_extras) + ")");
    auto e = py::cast<py::array>(out_extras);
    rows = std::min(rows, check_array(e, "out_extras", "float32", {c.num_extras}, true));
    extras = static_cast<float*>(e.mutable_data());
  } else if (!out_extras.is_none()) {
    throw std::invalid_argument("out_extras given but the buffer has num_extras=0");
  }
  int64_t* where = nullptr;
  if (!out_where.is_none()) {
    auto w = py::cast<py::array>(out_where);
    rows = std::min(rows, check_array(w, "out_where", "int64", {2}, true));
    where = static_cast<int64_t*>(w.mutable_data());
  }
  if (rows < need)
    throw std::invalid_argument("output arrays hold " + std::to_string(rows) + " rows, need at least " + what +
                                " (out_x " + shape_of(out_x) + ", out_y " + shape_of(out_y) + ")");
  return Output{static_cast<std::byte*>(out_x.mutable_data()), static_cast<int64_t*>(out_y.mutable_data()),
                extras, rows, where};
}

Output check_draw_outputs(const Buffer& b, int64_t r, py::array out_x, py::array out_y, const py::object& out_extras,
                          const py::object& out_where) {
  if (r <= 0) throw std::invalid_argument("r must be positive, got " + std::to_string(r));
  return check_outputs(b, r, "r=" + std::to_string(r), std::move(out_x), std::move(out_y), out_extras, out_where);
}

// A 1-D int64 (or int32, widened into `widened`) array of local slots: (data, length).
std::pair<const int64_t*, int64_t> slot_array(const py::array& slots, std::vector<int64_t>& widened) {
  const std::string dtype = dtype_of(slots);
  if (dtype != "int64" && dtype != "int32")
    throw std::invalid_argument("slots has dtype " + dtype + ", expected int64 (or int32)");
  const int64_t m = check_array(slots, "slots", dtype, {}, false);
  if (dtype == "int64") return {static_cast<const int64_t*>(slots.data()), m};
  const auto* narrow = static_cast<const int32_t*>(slots.data());
  widened.assign(narrow, narrow + m);
  return {widened.data(), m};
}

void read(const Buffer& b, const py::array& slots, py::array out_x, py::array out_y, const py::object& out_extras) {
  std::vector<int64_t> widened;
  const auto [data, m] = slot_array(slots, widened);
  const Output out = check_outputs(b, m, "len(slots)=" + std::to_string(m), std::move(out_x), std::move(out_y),
                                   out_extras);
  py::gil_scoped_release release;
  b.read(data, m, out);
}

void write_extras(Buffer& b, const py::array& slots, const py::array& extras) {
  const Config& c = b.config();
  std::vector<int64_t> widened;
  const int64_t* data = nullptr;
  int64_t m = 0;
  const float* values = nullptr;
  if (c.num_extras) {  // else Buffer::write_extras says that the buffer stores none
    std::tie(data, m) = slot_array(slots, widened);
    if (check_array(extras, "extras", "float32", {c.num_extras}, false) != m)
      throw std::invalid_argument("extras has " + std::to_string(extras.shape(0)) + " rows but slots has " +
                                  std::to_string(m) + " entries");
    values = static_cast<const float*>(extras.data());
  }
  py::gil_scoped_release release;
  b.write_extras(data, m, values);
}

// Returns the slot each sample went to (-1: not kept, or its slot taken by a later sample).
py::array_t<int64_t> add(Buffer& b, const py::array& x, const py::array& y, const py::object& extras) {
  const Config& c = b.config();
  const int64_t n = check_array(x, "x", dtype_name(c.dtype), c.sample_shape, false);
  const std::string y_dtype = dtype_of(y);
  if (y_dtype != "int64" && y_dtype != "int32")
    throw std::invalid_argument("y has dtype " + y_dtype + ", expected int64 (or int32)");
  if (check_array(y, "y", y_dtype, {}, false) != n)
    throw std::invalid_argument("y has " + std::to_string(y.shape(0)) + " labels but x has " +
                                std::to_string(n) + " samples");
  std::vector<int64_t> widened;
  const int64_t* labels = static_cast<const int64_t*>(y.data());
  if (y_dtype == "int32") {
    const auto* narrow = static_cast<const int32_t*>(y.data());
    widened.assign(narrow, narrow + n);
    labels = widened.data();
  }
  const float* extras_data = nullptr;
  if (c.num_extras) {
    if (extras.is_none())
      throw std::invalid_argument("extras is required (num_extras=" + std::to_string(c.num_extras) + ")");
    auto e = py::cast<py::array>(extras);
    if (check_array(e, "extras", "float32", {c.num_extras}, false) != n)
      throw std::invalid_argument("extras has " + std::to_string(e.shape(0)) + " rows but x has " +
                                  std::to_string(n) + " samples");
    extras_data = static_cast<const float*>(e.data());
  } else if (!extras.is_none()) {
    throw std::invalid_argument("extras given but the buffer has num_extras=0");
  }
  py::array_t<int64_t> slots(n);
  int64_t* slots_data = slots.mutable_data();
  {
    py::gil_scoped_release release;
    b.add(static_cast<const std::byte*>(x.data()), labels, extras_data, n, slots_data);
  }
  return slots;
}

py::dict stats(const Buffer& b) {
  const Stats s = [&] {
    py::gil_scoped_release release;
    return b.stats();
  }();
  py::dict d;
  d["classes"] = s.classes;
  d["seen_per_class"] = s.seen_per_class;
  d["filled_per_class"] = s.filled_per_class;
  d["filled"] = s.filled;
  d["capacity"] = s.capacity;
  d["filled_per_rank"] = s.filled_per_rank;
  d["global_filled"] = s.global_filled;
  d["last_draw_seconds"] = s.last_draw_seconds;
  d["bytes_read_remote"] = s.bytes_read_remote;
  d["bytes_read_local"] = s.bytes_read_local;
  d["draws"] = s.draws;
  return d;
}

std::vector<int64_t> slot_shape(const Config& c, std::vector<int64_t> tail) {
  tail.insert(tail.begin(), c.slots());
  return tail;
}

// The slice's arrays and counters; the Python layer adds the kind marker and configuration.
py::dict save(const Buffer& b) {
  const Config& c = b.config();
  py::array samples(py::dtype(dtype_name(c.dtype)), slot_shape(c, c.sample_shape));
  py::array_t<int64_t> labels(c.slots());
  py::array_t<float> extras(std::vector<int64_t>{c.slots(), c.num_extras});
  StateView view{static_cast<std::byte*>(samples.mutable_data()), labels.mutable_data(), extras.mutable_data()};
  std::string insertion, draw;
  PolicyCounters counters;
  {
    py::gil_scoped_release release;
    draw = b.draw_generator_state();  // first: refuses while a draw is in flight
    counters = b.save(view);
    insertion = b.insertion_generator_state();
  }
  const auto array = [](const std::vector<int64_t>& v) { return py::array_t<int64_t>(static_cast<py::ssize_t>(v.size()), v.data()); };
  py::dict d;
  d["samples"] = samples;
  d["labels"] = labels;
  d["extras"] = extras;
  d["classes"] = array(counters.classes);
  d["seen_per_class"] = array(counters.seen);
  d["filled_per_class"] = array(counters.filled);
  d["insertion_generator"] = insertion;
  d["draw_generator"] = draw;
  return d;
}

void load(Buffer& b, const py::array& samples, const py::array& labels, const py::array& extras,
          const py::array& classes, const py::array& seen, const py::array& filled, const std::string& insertion,
          const std::string& draw) {
  const Config& c = b.config();
  const auto rows = [&](const py::array& a, const char* name, const char* dtype, std::vector<int64_t> tail,
                        int64_t expected) {
    if (check_array(a, name, dtype, tail, false) != expected)
      throw std::invalid_argument(std::string(name) + " has shape " + shape_of(a) + ", expected " +
                                  std::to_string(expected) + " rows");
  };
  rows(samples, "samples", dtype_name(c.dtype), c.sample_shape, c.slots());
  rows(labels, "labels", "int64", {}, c.slots());
  rows(extras, "extras", "float32", {c.num_extras}, c.slots());
  const int64_t k = check_array(classes, "classes", "int64", {}, false);
  rows(seen, "seen_per_class", "int64", {}, k);
  rows(filled, "filled_per_class", "int64", {}, k);
  const auto vector = [](const py::array& a) {
    const auto* p = static_cast<const int64_t*>(a.data());
    return std::vector<int64_t>(p, p + a.shape(0));
  };
  const PolicyCounters counters{vector(classes), vector(seen), vector(filled)};
  // The view is read only; StateView's pointers are non-const because save() shares it.
  StateView view{static_cast<std::byte*>(const_cast<void*>(samples.data())),
                 static_cast<int64_t*>(const_cast<void*>(labels.data())),
                 static_cast<float*>(const_cast<void*>(extras.data()))};
  py::gil_scoped_release release;
  b.load(view, counters, insertion, draw);
}

// Python ints (or None) as C++ integers: a value that does not fit is a problem for every rank
// to raise, like the ones Arguments::parse() finds, never an exception here (the other ranks
// would wait in the collective construction). The Python layer passed ints or None only.
class IntegerReader {
 public:
  std::optional<int64_t> optional(const py::object& value, const char* name) {
    if (value.is_none()) return std::nullopt;
    if (!PyLong_Check(value.ptr()) || PyBool_Check(value.ptr())) return fail(name, value, "an int");
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
    if (overflow) return fail(name, value, "a 64-bit integer");
    return static_cast<int64_t>(v);
  }
  int64_t required(const py::object& value, const char* name) {
    if (value.is_none()) fail(name, value, "an int");
    return optional(value, name).value_or(0);
  }
  uint64_t seed(const py::object& value) {
    if (!value.is_none() && PyLong_Check(value.ptr()) && !PyBool_Check(value.ptr())) {
      const unsigned long long v = PyLong_AsUnsignedLongLong(value.ptr());
      if (!PyErr_Occurred()) return v;
      PyErr_Clear();  // negative or >= 2**64
      problem_ = "seed must be in [0, 2**64), got " + std::string(py::str(value));
      return 0;
    }
    fail("seed", value, "an int");
    return 0;
  }
  std::optional<std::vector<int64_t>> shape(const py::object& value) {
    if (value.is_none()) return std::nullopt;
    if (!py::isinstance<py::tuple>(value)) {
      fail("sample_shape", value, "a tuple of ints");
      return std::vector<int64_t>{1};
    }
    std::vector<int64_t> shape;
    for (const auto& d : value.cast<py::tuple>())
      shape.push_back(optional(py::reinterpret_borrow<py::object>(d), "sample_shape entries").value_or(1));
    return shape;
  }
  const std::string& problem() const { return problem_; }

 private:
  std::optional<int64_t> fail(const char* name, const py::object& value, const char* what) {
    if (problem_.empty()) problem_ = std::string(name) + " must be " + what + ", got " + std::string(py::repr(value));
    return std::nullopt;
  }
  std::string problem_;
};

// The arguments the Python layer converted (ints or None, dtype and policy names); every rule
// about their values is Arguments::parse() / Config::problem(). A problem the Python layer found
// (`argument_error`), or one found here, is raised on every rank by the collective constructor.
std::unique_ptr<Buffer> make(const py::object& num_classes, const py::object& slots_per_class,
                             const py::object& sample_shape, std::string dtype, const py::object& num_extras,
                             const py::object& seed, uintptr_t comm_address, std::string argument_error,
                             std::string policy, const py::object& capacity) {
  IntegerReader read;
  Arguments args;
  args.policy = std::move(policy);
  args.num_classes = read.optional(num_classes, "num_classes");
  args.slots_per_class = read.optional(slots_per_class, "slots_per_class");
  args.capacity = read.optional(capacity, "capacity");
  args.sample_shape = read.shape(sample_shape);
  args.dtype = std::move(dtype);
  args.num_extras = read.required(num_extras, "num_extras");
  args.seed = read.seed(seed);
  auto [config, problem] = args.parse();
  if (argument_error.empty()) argument_error = read.problem().empty() ? problem : read.problem();
  if (comm_address == 0) throw std::invalid_argument("comm address is null");
  const MPI_Comm comm = *reinterpret_cast<const MPI_Comm*>(comm_address);
  py::gil_scoped_release release;
  return std::make_unique<Buffer>(config, comm, argument_error);
}

}  // namespace

void bind_buffer(py::module_& m) {
  py::class_<Buffer>(m, "Buffer", "One rank's slice of the global rehearsal buffer (see cpp_loader.Buffer).")
      .def(py::init(&make), py::arg("num_classes"), py::arg("slots_per_class"), py::arg("sample_shape"),
           py::arg("dtype"), py::arg("num_extras"), py::arg("seed"), py::arg("comm_address"),
           py::arg("argument_error") = "", py::arg("policy") = "fixed", py::arg("capacity") = py::none())
      .def_property_readonly("rank", &Buffer::rank)
      .def_property_readonly("world_size", &Buffer::world_size)
      .def_property_readonly("closed", &Buffer::closed)
      .def_property_readonly("in_flight", &Buffer::in_flight)
      .def_property_readonly("thread_multiple", &Buffer::thread_multiple)
      .def("add", &add, py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("extras") = py::none())
      .def("read", &read, py::arg("slots").noconvert(), py::arg("out_x").noconvert(), py::arg("out_y").noconvert(),
           py::arg("out_extras") = py::none())
      .def("write_extras", &write_extras, py::arg("slots").noconvert(), py::arg("extras").noconvert())
      .def(
          "sample",
          [](Buffer& b, int64_t r, py::array out_x, py::array out_y, py::object out_extras, py::object out_where) {
            const Output out = check_draw_outputs(b, r, out_x, out_y, out_extras, out_where);
            py::gil_scoped_release release;
            return b.sample(r, out);
          },
          py::arg("r"), py::arg("out_x").noconvert(), py::arg("out_y").noconvert(), py::arg("out_extras") = py::none(),
          py::arg("out_where") = py::none())
      .def(
          "start",
          [](Buffer& b, int64_t r, py::array out_x, py::array out_y, py::object out_extras, py::object out_where) {
            const Output out = check_draw_outputs(b, r, out_x, out_y, out_extras, out_where);
            py::gil_scoped_release release;
            b.start(r, out);
          },
          py::arg("r"), py::arg("out_x").noconvert(), py::arg("out_y").noconvert(), py::arg("out_extras") = py::none(),
          py::arg("out_where") = py::none())
      .def("wait", &Buffer::wait, py::call_guard<py::gil_scoped_release>())
      .def("stats", &stats)
      .def("save", &save)
      .def("load", &load)
      .def("close", &Buffer::close, py::call_guard<py::gil_scoped_release>());
}

}  // namespace cpp_loader
