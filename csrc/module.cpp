// ganfast._C: the pybind11 surface of the torch-free kernels. Tensors arrive as raw addresses plus sizes;
// ganfast/_ext.py and the op modules validate them first. No Python or torch types cross this boundary.
#include <pybind11/pybind11.h>

#include "bias_act.h"
#include "spectral_norm.h"

#ifdef GANFAST_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace py = pybind11;
using ganfast::BiasActArgs;

namespace {

BiasActArgs make_bias_act_args(int dtype, int act, int order, int64_t n, int64_t channels, int64_t stride_c,
                               double alpha, double gain, double clamp, uintptr_t out, uintptr_t x, uintptr_t b,
                               uintptr_t g, uintptr_t h, uintptr_t yref) {
  auto ptr = [](uintptr_t p) { return reinterpret_cast<void*>(p); };
  return BiasActArgs{dtype, act, order, n, channels, stride_c, alpha, gain, clamp,
                     ptr(out), ptr(x), ptr(b), ptr(g), ptr(h), ptr(yref)};
}

#define GANFAST_BIAS_ACT_PYARGS                                                                                  \
  py::arg("dtype"), py::arg("act"), py::arg("order"), py::arg("n"), py::arg("channels"), py::arg("stride_c"),    \
      py::arg("alpha"), py::arg("gain"), py::arg("clamp"), py::arg("out"), py::arg("x"), py::arg("b"),           \
      py::arg("g"), py::arg("h"), py::arg("yref")

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ganfast compiled kernels (torch-free; call through ganfast.ops)";

  m.def(
      "bias_act_cpu",
      [](int dtype, int act, int order, int64_t n, int64_t channels, int64_t stride_c, double alpha, double gain,
         double clamp, uintptr_t out, uintptr_t x, uintptr_t b, uintptr_t g, uintptr_t h, uintptr_t yref) {
        ganfast::bias_act_cpu(
            make_bias_act_args(dtype, act, order, n, channels, stride_c, alpha, gain, clamp, out, x, b, g, h, yref));
      },
      GANFAST_BIAS_ACT_PYARGS, py::call_guard<py::gil_scoped_release>(),
      "bias_act elementwise pass on host memory (see csrc/bias_act.h for the orders).");

  // ---- spectral_norm (csrc/spectral_norm.h) ----
  m.def(
      "spectral_norm_cpu",
      [](int dtype, int64_t count, uintptr_t matrices, uintptr_t out) {
        ganfast::spectral_norm_cpu({dtype, count, reinterpret_cast<const ganfast::SNMatrix*>(matrices),
                                    reinterpret_cast<void*>(out)});
      },
      py::arg("dtype"), py::arg("count"), py::arg("matrices"), py::arg("out"), py::call_guard<py::gil_scoped_release>(),
      "Power iteration + sigma for `count` weights described by SNMatrix records in host memory.");

#ifdef GANFAST_WITH_CUDA
  m.attr("cuda_compiled") = true;
  m.attr("cuda_archs") = GANFAST_CUDA_ARCHS;
  m.attr("cuda_runtime_version") = CUDART_VERSION;
  m.def(
      "bias_act_cuda",
      [](int dtype, int act, int order, int64_t n, int64_t channels, int64_t stride_c, double alpha, double gain,
         double clamp, uintptr_t out, uintptr_t x, uintptr_t b, uintptr_t g, uintptr_t h, uintptr_t yref, int device,
         uintptr_t stream) {
        ganfast::bias_act_cuda(
            make_bias_act_args(dtype, act, order, n, channels, stride_c, alpha, gain, clamp, out, x, b, g, h, yref),
            device, stream);
      },
      GANFAST_BIAS_ACT_PYARGS, py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "bias_act elementwise pass on device memory, launched on `stream` of `device`.");
  m.def(
      "spectral_norm_cuda",
      [](int dtype, int64_t count, uintptr_t matrices, uintptr_t out, int device, uintptr_t stream) {
        ganfast::spectral_norm_cuda({dtype, count, reinterpret_cast<const ganfast::SNMatrix*>(matrices),
                                     reinterpret_cast<void*>(out)},
                                    device, stream);
      },
      py::arg("dtype"), py::arg("count"), py::arg("matrices"), py::arg("out"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "Power iteration + sigma for `count` weights (SNMatrix records in device memory), one launch on `stream`.");
  m.def("cuda_device_count", [] {
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
  });
#else
  m.attr("cuda_compiled") = false;
  m.attr("cuda_archs") = "";
  m.attr("cuda_runtime_version") = 0;
#endif
}
