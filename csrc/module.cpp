// ganfast._C: the pybind11 surface of the torch-free kernels. Tensors arrive as raw addresses plus sizes;
// ganfast/_ext.py and the op modules validate them first. No Python or torch types cross this boundary.
#include <pybind11/pybind11.h>

#include "bias_act.h"
#include "grad_penalty.h"

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

// ---- grad_penalty (issue 5) ----
ganfast::GradPenaltyArgs make_grad_penalty_fwd_args(int dtype, int64_t batch, int64_t per_sample, double center,
                                                    uintptr_t term, uintptr_t norm, uintptr_t g) {
  auto ptr = [](uintptr_t p) { return reinterpret_cast<void*>(p); };
  return {dtype, batch, per_sample, center, ptr(term), ptr(norm), nullptr, ptr(g), nullptr, nullptr, nullptr};
}

ganfast::GradPenaltyArgs make_grad_penalty_bwd_args(int dtype, int64_t batch, int64_t per_sample, double center,
                                                    uintptr_t out, uintptr_t g, uintptr_t dterm, uintptr_t dnorm,
                                                    uintptr_t norm) {
  auto ptr = [](uintptr_t p) { return reinterpret_cast<void*>(p); };
  return {dtype, batch, per_sample, center, nullptr, nullptr, ptr(out), ptr(g), ptr(dterm), ptr(dnorm), ptr(norm)};
}

#define GANFAST_GRAD_PENALTY_FWD_PYARGS                                                                      \
  py::arg("dtype"), py::arg("batch"), py::arg("per_sample"), py::arg("center"), py::arg("term"),              \
      py::arg("norm"), py::arg("g")
#define GANFAST_GRAD_PENALTY_BWD_PYARGS                                                                      \
  py::arg("dtype"), py::arg("batch"), py::arg("per_sample"), py::arg("center"), py::arg("out"), py::arg("g"), \
      py::arg("dterm"), py::arg("dnorm"), py::arg("norm")
// ---- end grad_penalty ----

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

  // ---- grad_penalty (issue 5) ----
  m.def(
      "grad_penalty_fwd_cpu",
      [](int dtype, int64_t batch, int64_t per_sample, double center, uintptr_t term, uintptr_t norm, uintptr_t g) {
        ganfast::grad_penalty_fwd_cpu(make_grad_penalty_fwd_args(dtype, batch, per_sample, center, term, norm, g));
      },
      GANFAST_GRAD_PENALTY_FWD_PYARGS, py::call_guard<py::gil_scoped_release>(),
      "Per-sample sum of squares, norm and penalty term of a (batch, per_sample) buffer (csrc/grad_penalty.h).");
  m.def(
      "grad_penalty_bwd_cpu",
      [](int dtype, int64_t batch, int64_t per_sample, double center, uintptr_t out, uintptr_t g, uintptr_t dterm,
         uintptr_t dnorm, uintptr_t norm) {
        ganfast::grad_penalty_bwd_cpu(
            make_grad_penalty_bwd_args(dtype, batch, per_sample, center, out, g, dterm, dnorm, norm));
      },
      GANFAST_GRAD_PENALTY_BWD_PYARGS, py::call_guard<py::gil_scoped_release>(),
      "out = g * coef[sample], the backward of grad_penalty_fwd (csrc/grad_penalty.h).");
#ifdef GANFAST_WITH_CUDA
  m.def(
      "grad_penalty_fwd_cuda",
      [](int dtype, int64_t batch, int64_t per_sample, double center, uintptr_t term, uintptr_t norm, uintptr_t g,
         int device, uintptr_t stream) {
        ganfast::grad_penalty_fwd_cuda(make_grad_penalty_fwd_args(dtype, batch, per_sample, center, term, norm, g),
                                       device, stream);
      },
      GANFAST_GRAD_PENALTY_FWD_PYARGS, py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "grad_penalty_fwd on device memory, launched on `stream` of `device`.");
  m.def(
      "grad_penalty_bwd_cuda",
      [](int dtype, int64_t batch, int64_t per_sample, double center, uintptr_t out, uintptr_t g, uintptr_t dterm,
         uintptr_t dnorm, uintptr_t norm, int device, uintptr_t stream) {
        ganfast::grad_penalty_bwd_cuda(
            make_grad_penalty_bwd_args(dtype, batch, per_sample, center, out, g, dterm, dnorm, norm), device, stream);
      },
      GANFAST_GRAD_PENALTY_BWD_PYARGS, py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "grad_penalty_bwd on device memory, launched on `stream` of `device`.");
#endif
  // ---- end grad_penalty ----

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
