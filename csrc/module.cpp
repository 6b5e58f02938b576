// ganfast._C: the pybind11 surface of the torch-free kernels. Tensors arrive as raw addresses plus sizes;
// ganfast/_ext.py and the op modules validate them first. No Python or torch types cross this boundary.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>

#include "bias_act.h"
#include "upfirdn2d.h"
#include "grad_penalty.h"
#include "spectral_norm.h"
#include "filtered_lrelu.h"
#include "affine_sample.h"
#include "affine_resample.h"
#include "color_matrix.h"
#include "latents.h"

namespace py = pybind11;

namespace {

void* ptr(uintptr_t p) { return reinterpret_cast<void*>(p); }

// Each op binds `<op>_cpu` and, when built with CUDA, `<op>_cuda`, which takes the same arguments plus the device
// index and the stream handle (ganfast._ext.launch calls them). A new op adds its bind_<op> and one call below.

// ---- bias_act ---------------------------------------------------------------------------------------------------
ganfast::BiasActArgs make_bias_act_args(int dtype, int act, int order, int64_t n, int64_t channels,
                                        int64_t stride_c, double alpha, double gain, double clamp, uintptr_t out,
                                        uintptr_t x, uintptr_t b, uintptr_t g, uintptr_t h, uintptr_t yref) {
  return ganfast::BiasActArgs{dtype, act, order, n, channels, stride_c, alpha, gain, clamp,
                              ptr(out), ptr(x), ptr(b), ptr(g), ptr(h), ptr(yref)};
}

#define GANFAST_BIAS_ACT_PYARGS                                                                                  \
  py::arg("dtype"), py::arg("act"), py::arg("order"), py::arg("n"), py::arg("channels"), py::arg("stride_c"),    \
      py::arg("alpha"), py::arg("gain"), py::arg("clamp"), py::arg("out"), py::arg("x"), py::arg("b"),           \
      py::arg("g"), py::arg("h"), py::arg("yref")

void bind_bias_act(py::module_& m) {
  m.def(
      "bias_act_cpu",
      [](int dtype, int act, int order, int64_t n, int64_t channels, int64_t stride_c, double alpha, double gain,
         double clamp, uintptr_t out, uintptr_t x, uintptr_t b, uintptr_t g, uintptr_t h, uintptr_t yref) {
        ganfast::bias_act_cpu(
            make_bias_act_args(dtype, act, order, n, channels, stride_c, alpha, gain, clamp, out, x, b, g, h, yref));
      },
      GANFAST_BIAS_ACT_PYARGS, py::call_guard<py::gil_scoped_release>(),
      "bias_act elementwise pass on host memory (see csrc/bias_act.h for the orders).");
#ifdef GANFAST_WITH_CUDA
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
#endif
}

// ---- upfirdn2d --------------------------------------------------------------------------------------------------
using Shape4 = std::array<int64_t, 4>;

// sizes: (N, C, in_h, in_w, out_h, out_w); scaling: (up_x, up_y, down_x, down_y); pad0: (x0, y0);
// taps_hw: (taps_h, taps_w); strides of x and out in elements.
ganfast::Upfirdn2dArgs make_upfirdn2d_args(int dtype, const std::array<int64_t, 6>& sizes, const Shape4& scaling,
                                           const std::array<int64_t, 2>& pad0, const std::array<int64_t, 2>& taps_hw,
                                           const Shape4& x_stride, const Shape4& out_stride, uintptr_t out,
                                           uintptr_t x, uintptr_t taps) {
  ganfast::Upfirdn2dArgs a{};
  a.dtype = dtype;
  a.batch = sizes[0], a.channels = sizes[1], a.in_h = sizes[2], a.in_w = sizes[3], a.out_h = sizes[4], a.out_w = sizes[5];
  a.up_x = scaling[0], a.up_y = scaling[1], a.down_x = scaling[2], a.down_y = scaling[3];
  a.pad_x0 = pad0[0], a.pad_y0 = pad0[1];
  a.taps_h = taps_hw[0], a.taps_w = taps_hw[1];
  for (int d = 0; d < 4; ++d) a.x_stride[d] = x_stride[d], a.out_stride[d] = out_stride[d];
  a.out = ptr(out);
  a.x = reinterpret_cast<const void*>(x);
  a.taps = reinterpret_cast<const void*>(taps);
  return a;
}

#define GANFAST_UPFIRDN2D_PYARGS                                                                                 \
  py::arg("dtype"), py::arg("sizes"), py::arg("scaling"), py::arg("pad0"), py::arg("taps_hw"),                  \
      py::arg("x_stride"), py::arg("out_stride"), py::arg("out"), py::arg("x"), py::arg("taps")

void bind_upfirdn2d(py::module_& m) {
  m.def(
      "upfirdn2d_cpu",
      [](int dtype, const std::array<int64_t, 6>& sizes, const Shape4& scaling, const std::array<int64_t, 2>& pad0,
         const std::array<int64_t, 2>& taps_hw, const Shape4& x_stride, const Shape4& out_stride, uintptr_t out,
         uintptr_t x, uintptr_t taps) {
        ganfast::upfirdn2d_cpu(
            make_upfirdn2d_args(dtype, sizes, scaling, pad0, taps_hw, x_stride, out_stride, out, x, taps));
      },
      GANFAST_UPFIRDN2D_PYARGS, py::call_guard<py::gil_scoped_release>(),
      "upfirdn2d on host memory (see csrc/upfirdn2d.h).");
#ifdef GANFAST_WITH_CUDA
  m.def(
      "upfirdn2d_cuda",
      [](int dtype, const std::array<int64_t, 6>& sizes, const Shape4& scaling, const std::array<int64_t, 2>& pad0,
         const std::array<int64_t, 2>& taps_hw, const Shape4& x_stride, const Shape4& out_stride, uintptr_t out,
         uintptr_t x, uintptr_t taps, int device, uintptr_t stream) {
        ganfast::upfirdn2d_cuda(
            make_upfirdn2d_args(dtype, sizes, scaling, pad0, taps_hw, x_stride, out_stride, out, x, taps), device,
            stream);
      },
      GANFAST_UPFIRDN2D_PYARGS, py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "upfirdn2d on device memory, launched on `stream` of `device`.");
#endif
}

// ---- grad_penalty -----------------------------------------------------------------------------------------------
ganfast::GradPenaltyArgs make_grad_penalty_fwd_args(int dtype, int64_t batch, int64_t per_sample, double center,
                                                    uintptr_t term, uintptr_t norm, uintptr_t g) {
  return {dtype, batch, per_sample, center, ptr(term), ptr(norm), nullptr, ptr(g), nullptr, nullptr, nullptr};
}

ganfast::GradPenaltyArgs make_grad_penalty_bwd_args(int dtype, int64_t batch, int64_t per_sample, double center,
                                                    uintptr_t out, uintptr_t g, uintptr_t dterm, uintptr_t dnorm,
                                                    uintptr_t norm) {
  return {dtype, batch, per_sample, center, nullptr, nullptr, ptr(out), ptr(g), ptr(dterm), ptr(dnorm), ptr(norm)};
}

#define GANFAST_GRAD_PENALTY_FWD_PYARGS                                                                      \
  py::arg("dtype"), py::arg("batch"), py::arg("per_sample"), py::arg("center"), py::arg("term"),              \
      py::arg("norm"), py::arg("g")
#define GANFAST_GRAD_PENALTY_BWD_PYARGS                                                                      \
  py::arg("dtype"), py::arg("batch"), py::arg("per_sample"), py::arg("center"), py::arg("out"), py::arg("g"), \
      py::arg("dterm"), py::arg("dnorm"), py::arg("norm")

void bind_grad_penalty(py::module_& m) {
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
}

// ---- spectral_norm ----------------------------------------------------------------------------------------------
ganfast::SpectralNormArgs make_spectral_norm_args(int dtype, int64_t count, uintptr_t matrices, uintptr_t out) {
  return {dtype, count, reinterpret_cast<const ganfast::SNMatrix*>(matrices), ptr(out)};
}

void bind_spectral_norm(py::module_& m) {
  m.def(
      "spectral_norm_cpu",
      [](int dtype, int64_t count, uintptr_t matrices, uintptr_t out) {
        ganfast::spectral_norm_cpu(make_spectral_norm_args(dtype, count, matrices, out));
      },
      py::arg("dtype"), py::arg("count"), py::arg("matrices"), py::arg("out"), py::call_guard<py::gil_scoped_release>(),
      "Power iteration + sigma for `count` weights described by SNMatrix records in host memory.");
#ifdef GANFAST_WITH_CUDA
  m.def(
      "spectral_norm_cuda",
      [](int dtype, int64_t count, uintptr_t matrices, uintptr_t out, int device, uintptr_t stream) {
        ganfast::spectral_norm_cuda(make_spectral_norm_args(dtype, count, matrices, out), device, stream);
      },
      py::arg("dtype"), py::arg("count"), py::arg("matrices"), py::arg("out"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(),
      "Power iteration + sigma for `count` weights (SNMatrix records in device memory), one launch on `stream`.");
#endif
}

// ---- filtered_lrelu -------------------------------------------------------------------------------------------------
// sizes: (N, C, in_h, in_w, mid_h, mid_w, out_h, out_w); scaling: (up, down); pads: (pad1_x, pad1_y, pad2_x,
// pad2_y); taps1/taps2: (taps_h, taps_w, separable); strides of x and out in elements (see csrc/filtered_lrelu.h).
ganfast::FilteredLreluArgs make_filtered_lrelu_args(int dtype, int mode, const std::array<int64_t, 8>& sizes,
                                                    const std::array<int64_t, 2>& scaling, const Shape4& pads,
                                                    const std::array<int64_t, 3>& taps1_shape,
                                                    const std::array<int64_t, 3>& taps2_shape, double gain,
                                                    double slope, double clamp, const Shape4& x_stride,
                                                    const Shape4& out_stride, uintptr_t out, uintptr_t x,
                                                    uintptr_t bias, uintptr_t mask, uintptr_t taps1, uintptr_t taps2) {
  ganfast::FilteredLreluArgs a{};
  a.dtype = dtype, a.mode = mode;
  a.batch = sizes[0], a.channels = sizes[1], a.in_h = sizes[2], a.in_w = sizes[3];
  a.mid_h = sizes[4], a.mid_w = sizes[5], a.out_h = sizes[6], a.out_w = sizes[7];
  a.up = scaling[0], a.down = scaling[1];
  a.pad1_x = pads[0], a.pad1_y = pads[1], a.pad2_x = pads[2], a.pad2_y = pads[3];
  a.taps1_h = taps1_shape[0], a.taps1_w = taps1_shape[1], a.sep1 = taps1_shape[2] != 0;
  a.taps2_h = taps2_shape[0], a.taps2_w = taps2_shape[1], a.sep2 = taps2_shape[2] != 0;
  a.gain = gain, a.slope = slope, a.clamp = clamp;
  for (int d = 0; d < 4; ++d) a.x_stride[d] = x_stride[d], a.out_stride[d] = out_stride[d];
  a.out = reinterpret_cast<void*>(out);
  a.x = reinterpret_cast<const void*>(x);
  a.bias = reinterpret_cast<const void*>(bias);
  a.mask = reinterpret_cast<uint8_t*>(mask);
  a.taps1 = reinterpret_cast<const void*>(taps1);
  a.taps2 = reinterpret_cast<const void*>(taps2);
  return a;
}

#define GANFAST_FILTERED_LRELU_PYARGS                                                                           \
  py::arg("dtype"), py::arg("mode"), py::arg("sizes"), py::arg("scaling"), py::arg("pads"), py::arg("taps1_shape"), \
      py::arg("taps2_shape"), py::arg("gain"), py::arg("slope"), py::arg("clamp"), py::arg("x_stride"),          \
      py::arg("out_stride"), py::arg("out"), py::arg("x"), py::arg("bias"), py::arg("mask"), py::arg("taps1"),   \
      py::arg("taps2")

void bind_filtered_lrelu(py::module_& m) {
  m.def(
      "filtered_lrelu_cpu",
      [](int dtype, int mode, const std::array<int64_t, 8>& sizes, const std::array<int64_t, 2>& scaling,
         const Shape4& pads, const std::array<int64_t, 3>& taps1_shape, const std::array<int64_t, 3>& taps2_shape,
         double gain, double slope, double clamp, const Shape4& x_stride, const Shape4& out_stride, uintptr_t out,
         uintptr_t x, uintptr_t bias, uintptr_t mask, uintptr_t taps1, uintptr_t taps2) {
        ganfast::filtered_lrelu_cpu(make_filtered_lrelu_args(dtype, mode, sizes, scaling, pads, taps1_shape,
                                                             taps2_shape, gain, slope, clamp, x_stride, out_stride,
                                                             out, x, bias, mask, taps1, taps2));
      },
      GANFAST_FILTERED_LRELU_PYARGS, py::call_guard<py::gil_scoped_release>(),
      "filtered_lrelu pass on host memory (see csrc/filtered_lrelu.h for the modes).");
#ifdef GANFAST_WITH_CUDA
  m.def(
      "filtered_lrelu_cuda",
      [](int dtype, int mode, const std::array<int64_t, 8>& sizes, const std::array<int64_t, 2>& scaling,
         const Shape4& pads, const std::array<int64_t, 3>& taps1_shape, const std::array<int64_t, 3>& taps2_shape,
         double gain, double slope, double clamp, const Shape4& x_stride, const Shape4& out_stride, uintptr_t out,
         uintptr_t x, uintptr_t bias, uintptr_t mask, uintptr_t taps1, uintptr_t taps2, int device,
         uintptr_t stream) {
        ganfast::filtered_lrelu_cuda(make_filtered_lrelu_args(dtype, mode, sizes, scaling, pads, taps1_shape,
                                                              taps2_shape, gain, slope, clamp, x_stride, out_stride,
                                                              out, x, bias, mask, taps1, taps2),
                                     device, stream);
      },
      GANFAST_FILTERED_LRELU_PYARGS, py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "filtered_lrelu pass on device memory, launched on `stream` of `device`.");
#endif
}

// ---- affine_sample --------------------------------------------------------------------------------------------------
// sizes: (N, C, in_h, in_w, out_h, out_w); strides of the tensor read and the tensor written, in elements.
ganfast::AffineSampleArgs make_affine_sample_args(int dtype, int transpose, const std::array<int64_t, 6>& sizes,
                                                  const std::array<int64_t, 4>& src_stride,
                                                  const std::array<int64_t, 4>& dst_stride, uintptr_t dst,
                                                  uintptr_t src, uintptr_t matrix) {
  ganfast::AffineSampleArgs a{};
  a.dtype = dtype, a.transpose = transpose;
  a.batch = sizes[0], a.channels = sizes[1], a.in_h = sizes[2], a.in_w = sizes[3];
  a.out_h = sizes[4], a.out_w = sizes[5];
  for (int d = 0; d < 4; ++d) a.src_stride[d] = src_stride[d], a.dst_stride[d] = dst_stride[d];
  a.dst = reinterpret_cast<void*>(dst);
  a.src = reinterpret_cast<const void*>(src);
  a.matrix = reinterpret_cast<const void*>(matrix);
  return a;
}

void bind_affine_sample(py::module_& m) {
  m.def(
      "affine_sample_cpu",
      [](int dtype, int transpose, const std::array<int64_t, 6>& sizes, const std::array<int64_t, 4>& src_stride,
         const std::array<int64_t, 4>& dst_stride, uintptr_t dst, uintptr_t src, uintptr_t matrix) {
        ganfast::affine_sample_cpu(
            make_affine_sample_args(dtype, transpose, sizes, src_stride, dst_stride, dst, src, matrix));
      },
      py::arg("dtype"), py::arg("transpose"), py::arg("sizes"), py::arg("src_stride"), py::arg("dst_stride"),
      py::arg("dst"), py::arg("src"), py::arg("matrix"), py::call_guard<py::gil_scoped_release>(),
      "Bilinear affine sampling or its transpose on host memory (see csrc/affine_sample.h).");
#ifdef GANFAST_WITH_CUDA
  m.def(
      "affine_sample_cuda",
      [](int dtype, int transpose, const std::array<int64_t, 6>& sizes, const std::array<int64_t, 4>& src_stride,
         const std::array<int64_t, 4>& dst_stride, uintptr_t dst, uintptr_t src, uintptr_t matrix, int device,
         uintptr_t stream) {
        ganfast::affine_sample_cuda(
            make_affine_sample_args(dtype, transpose, sizes, src_stride, dst_stride, dst, src, matrix), device, stream);
      },
      py::arg("dtype"), py::arg("transpose"), py::arg("sizes"), py::arg("src_stride"), py::arg("dst_stride"),
      py::arg("dst"), py::arg("src"), py::arg("matrix"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(), "affine_sample on device memory, launched on `stream` of `device`.");
#endif
}

// ---- affine_resample ------------------------------------------------------------------------------------------------
// sizes: (N, C, H, W); margins: (pad_x0, pad_x1, pad_y0, pad_y1); strides of the tensor read and the tensor written.
ganfast::AffineResampleArgs make_affine_resample_args(int dtype, int transpose, const std::array<int64_t, 4>& sizes,
                                                      const std::array<int64_t, 4>& margins, int64_t taps,
                                                      const std::array<int64_t, 4>& src_stride,
                                                      const std::array<int64_t, 4>& dst_stride, uintptr_t dst,
                                                      uintptr_t src, uintptr_t matrix, uintptr_t filter) {
  ganfast::AffineResampleArgs a{};
  a.dtype = dtype, a.transpose = transpose;
  a.batch = sizes[0], a.channels = sizes[1], a.height = sizes[2], a.width = sizes[3];
  a.pad_x0 = margins[0], a.pad_x1 = margins[1], a.pad_y0 = margins[2], a.pad_y1 = margins[3];
  a.taps = taps;
  for (int d = 0; d < 4; ++d) a.src_stride[d] = src_stride[d], a.dst_stride[d] = dst_stride[d];
  a.dst = reinterpret_cast<void*>(dst);
  a.src = reinterpret_cast<const void*>(src);
  a.matrix = reinterpret_cast<const void*>(matrix);
  a.filter = reinterpret_cast<const void*>(filter);
  return a;
}

#define GANFAST_AFFINE_RESAMPLE_PYARGS                                                                           \
  py::arg("dtype"), py::arg("transpose"), py::arg("sizes"), py::arg("margins"), py::arg("taps"),                 \
      py::arg("src_stride"), py::arg("dst_stride"), py::arg("dst"), py::arg("src"), py::arg("matrix"),           \
      py::arg("filter")

void bind_affine_resample(py::module_& m) {
  m.def(
      "affine_resample_cpu",
      [](int dtype, int transpose, const std::array<int64_t, 4>& sizes, const std::array<int64_t, 4>& margins,
         int64_t taps, const std::array<int64_t, 4>& src_stride, const std::array<int64_t, 4>& dst_stride,
         uintptr_t dst, uintptr_t src, uintptr_t matrix, uintptr_t filter) {
        ganfast::affine_resample_cpu(make_affine_resample_args(dtype, transpose, sizes, margins, taps, src_stride,
                                                               dst_stride, dst, src, matrix, filter));
      },
      GANFAST_AFFINE_RESAMPLE_PYARGS, py::call_guard<py::gil_scoped_release>(),
      "Fused geometric augmentation pass or its transpose on host memory (see csrc/affine_resample.h).");
#ifdef GANFAST_WITH_CUDA
  m.def(
      "affine_resample_cuda",
      [](int dtype, int transpose, const std::array<int64_t, 4>& sizes, const std::array<int64_t, 4>& margins,
         int64_t taps, const std::array<int64_t, 4>& src_stride, const std::array<int64_t, 4>& dst_stride,
         uintptr_t dst, uintptr_t src, uintptr_t matrix, uintptr_t filter, int device, uintptr_t stream) {
        ganfast::affine_resample_cuda(make_affine_resample_args(dtype, transpose, sizes, margins, taps, src_stride,
                                                                dst_stride, dst, src, matrix, filter),
                                      device, stream);
      },
      GANFAST_AFFINE_RESAMPLE_PYARGS, py::arg("device"), py::arg("stream"), py::call_guard<py::gil_scoped_release>(),
      "affine_resample on device memory, launched on `stream` of `device`.");
#endif
}

// ---- color_matrix ---------------------------------------------------------------------------------------------------
// sizes: (N, C, H, W); strides of x and out in elements.
ganfast::ColorMatrixArgs make_color_matrix_args(int dtype, const std::array<int64_t, 4>& sizes,
                                                const std::array<int64_t, 4>& x_stride,
                                                const std::array<int64_t, 4>& out_stride, uintptr_t out, uintptr_t x,
                                                uintptr_t matrix, uintptr_t offset) {
  ganfast::ColorMatrixArgs a{};
  a.dtype = dtype;
  a.batch = sizes[0], a.channels = sizes[1], a.pixels = sizes[2] * sizes[3], a.width = sizes[3];
  for (int d = 0; d < 4; ++d) a.x_stride[d] = x_stride[d], a.out_stride[d] = out_stride[d];
  a.out = reinterpret_cast<void*>(out);
  a.x = reinterpret_cast<const void*>(x);
  a.matrix = reinterpret_cast<const void*>(matrix);
  a.offset = reinterpret_cast<const void*>(offset);
  return a;
}

void bind_color_matrix(py::module_& m) {
  m.def(
      "color_matrix_cpu",
      [](int dtype, const std::array<int64_t, 4>& sizes, const std::array<int64_t, 4>& x_stride,
         const std::array<int64_t, 4>& out_stride, uintptr_t out, uintptr_t x, uintptr_t matrix, uintptr_t offset) {
        ganfast::color_matrix_cpu(make_color_matrix_args(dtype, sizes, x_stride, out_stride, out, x, matrix, offset));
      },
      py::arg("dtype"), py::arg("sizes"), py::arg("x_stride"), py::arg("out_stride"), py::arg("out"), py::arg("x"),
      py::arg("matrix"), py::arg("offset"), py::call_guard<py::gil_scoped_release>(),
      "Per-image colour matrix on host memory (see csrc/color_matrix.h).");
#ifdef GANFAST_WITH_CUDA
  m.def(
      "color_matrix_cuda",
      [](int dtype, const std::array<int64_t, 4>& sizes, const std::array<int64_t, 4>& x_stride,
         const std::array<int64_t, 4>& out_stride, uintptr_t out, uintptr_t x, uintptr_t matrix, uintptr_t offset,
         int device, uintptr_t stream) {
        ganfast::color_matrix_cuda(make_color_matrix_args(dtype, sizes, x_stride, out_stride, out, x, matrix, offset),
                                   device, stream);
      },
      py::arg("dtype"), py::arg("sizes"), py::arg("x_stride"), py::arg("out_stride"), py::arg("out"), py::arg("x"),
      py::arg("matrix"), py::arg("offset"), py::arg("device"), py::arg("stream"),
      py::call_guard<py::gil_scoped_release>(), "color_matrix on device memory, launched on `stream` of `device`.");
#endif
}

// ---- seed_latents, seed_randint (MT19937 + NumPy's legacy Gaussian and integers, csrc/latents.h) -----------------
void bind_seed_latents(py::module_& m) {
  m.def(
      "seed_latents_cpu",
      [](uintptr_t seeds, int64_t count, int64_t z_dim, int dtype, uintptr_t out) {
        ganfast::seed_latents_cpu(reinterpret_cast<const int64_t*>(seeds), count, z_dim, dtype, ptr(out));
      },
      py::arg("seeds"), py::arg("count"), py::arg("z_dim"), py::arg("dtype"), py::arg("out"),
      py::call_guard<py::gil_scoped_release>(),
      "Row j of the (count, z_dim) float32/float64 `out`: np.random.RandomState(seeds[j]).randn(z_dim).");
  m.def(
      "seed_randint_cpu",
      [](uintptr_t seeds, int64_t count, int64_t stream, int64_t high, uintptr_t out) {
        ganfast::seed_randint_cpu(reinterpret_cast<const int64_t*>(seeds), count, stream, high,
                                  reinterpret_cast<int64_t*>(out));
      },
      py::arg("seeds"), py::arg("count"), py::arg("stream"), py::arg("high"), py::arg("out"),
      py::call_guard<py::gil_scoped_release>(),
      "int64 `out`[j] = np.random.RandomState([seeds[j], stream]).randint(high).");
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ganfast compiled kernels (torch-free; call through ganfast.ops)";
#ifdef GANFAST_WITH_CUDA
  m.attr("cuda_compiled") = true;
  m.attr("cuda_archs") = GANFAST_CUDA_ARCHS;
#else
  m.attr("cuda_compiled") = false;
  m.attr("cuda_archs") = "";
#endif
  bind_bias_act(m);
  bind_upfirdn2d(m);
  bind_grad_penalty(m);
  bind_spectral_norm(m);
  bind_filtered_lrelu(m);
  bind_affine_sample(m);
  bind_affine_resample(m);
  bind_color_matrix(m);
  bind_seed_latents(m);
}
