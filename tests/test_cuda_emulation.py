"""kernels/*.cu executed without a GPU: the CUDA execution model (tests/cuda_emulation) runs every kernel through its
real launch wrapper, in several thread orders, against ganfast's references; and proves that it catches a missing
barrier, an out-of-bounds shared-memory write and a wrong shuffle width."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cuda_emulation import ROOT, asan_environment, build, emulate, load, missing, stats
from support import rel_err

from ganfast.ops import (affine_resample, affine_sample, bias_act, color_matrix, filtered_lrelu, grad_penalty,
                         upfirdn2d)
from ganfast.ops.spectral_norm import power_iteration
from ganfast.reference import spectral_norm as sn_ref
from ganfast.reference.affine_resample import affine_resample as affine_resample_ref
from ganfast.reference.affine_sample import affine_sample as affine_sample_ref
from ganfast.reference.bias_act import bias_act as bias_act_ref
from ganfast.reference.color_matrix import color_matrix as color_matrix_ref
from ganfast.reference.filtered_lrelu import filtered_lrelu as filtered_lrelu_ref
from ganfast.reference.losses import grad_penalty as grad_penalty_ref
from ganfast.reference.upfirdn2d import setup_filter
from ganfast.reference.upfirdn2d import upfirdn2d as upfirdn2d_ref

pytestmark = pytest.mark.skipif(missing() is not None, reason=f"CUDA emulation: {missing()}")

ORDERS = ("ascending", "descending", "random")
DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
TOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}
# a GPU with 1 SM and at most 3 planes per grid: the grid-stride loops over blocks and planes run more than once
SMALL_GRID = {"multiprocessors": 1, "max_grid_z": 3}


@pytest.fixture(scope="module")
def emu():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load(build(sanitize=os.environ.get("GANFAST_CUDA_EMU_ASAN") == "1"))
    torch.set_num_threads(threads)


def _grads(out, inputs, dy, create_graph=False):
    return torch.autograd.grad(out, inputs, dy, allow_unused=True, create_graph=create_graph)


def assert_parity(emu, fn, ref_fn, inputs, dtype, orders=ORDERS, grad=True, config=None, out_dtype=None):
    """fn(*inputs in dtype) under the model, in each thread order, against ref_fn in float64 on the same (rounded)
    values: the output and, with ``grad``, the gradients of every input that requires one (backward kernels)."""
    refs = [t.detach().to(dtype).double().requires_grad_(grad and t.requires_grad) for t in inputs]
    want = ref_fn(*refs)
    dy = torch.randn_like(want).to(dtype).double()
    want_grads = _grads(want, [t for t in refs if t.requires_grad], dy) if grad else ()
    for i, order in enumerate(orders):
        xs = [t.to(dtype).detach().requires_grad_(grad and r.requires_grad) for t, r in zip(inputs, refs)]
        before = stats(emu)["launches"]
        with emulate(emu, order=order, seed=i, **(config or {})):
            out = fn(*xs)
            got_grads = _grads(out, [t for t in xs if t.requires_grad], dy.to(out.dtype)) if grad else ()
        assert stats(emu)["launches"] > before, "the emulated kernels did not run"
        assert out.dtype == (out_dtype or dtype) and out.shape == want.shape
        assert not out.isnan().any(), f"{order}: NaN in the output (a read of poisoned shared memory?)"
        assert rel_err(out.double(), want) < TOL[dtype], f"{order}: forward rel err {rel_err(out.double(), want)}"
        for k, (g, w) in enumerate(zip(got_grads, want_grads)):
            assert g is not None and rel_err(g.double(), w) < TOL[dtype], f"{order}: gradient {k}"


# ---- bias_act: orders 0, 1, 2, every activation --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_bias_act(emu, dtype):
    """Forward and first derivative for every activation, with clamp; sizes off the block size, a grid-stride loop
    (1 SM), channels_last. In 16 bits a y within rounding of the clamp lands either side of it (the gradient's
    mask flips): there the clamped gradient is compared in float32/float64 only, the clamped forward in all."""
    x = torch.randn(3, 5, 7, 9, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    x.requires_grad_()
    wide = dtype in (torch.float64, torch.float32)
    for act in ("linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"):
        for clamp in (None, 2.5):
            assert_parity(emu, lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl="ext"),
                          lambda x, b: bias_act_ref(x, b, act=act, clamp=clamp), [x, b], dtype, orders=ORDERS[:2],
                          grad=clamp is None or wide, config=SMALL_GRID)
    xl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    assert_parity(emu, lambda x, b: bias_act(x, b, act="lrelu", impl="ext"),
                  lambda x, b: bias_act_ref(x, b, act="lrelu"), [xl, b], dtype)
    # 32 blocks of 1,024 elements on one SM: the grid-stride loop runs twice, the last pass partly
    xs = torch.randn(2, 3, 73, 97, dtype=torch.float64, requires_grad=True)
    assert_parity(emu, lambda x, b: bias_act(x, b[:3], act="swish", impl="ext"),
                  lambda x, b: bias_act_ref(x, b[:3], act="swish"), [xs, b], dtype, orders=ORDERS[1:],
                  config=SMALL_GRID)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_bias_act_second_derivative(emu, dtype):
    """Double backward (the order-2 kernel): d/dx of <dL/dx, v> for the curved activations."""
    x0 = torch.randn(2, 3, 5, 11, dtype=torch.float64)
    b0 = torch.randn(3, dtype=torch.float64)
    for act in ("tanh", "sigmoid", "elu", "selu", "softplus", "swish"):
        def second(x, b, impl, act=act):
            y = bias_act(x, b, act=act, impl=impl) if impl else bias_act_ref(x, b, act=act)
            (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
            return gx
        assert_parity(emu, lambda x, b: second(x, b, "ext"), lambda x, b: second(x, b, None),
                      [x0.requires_grad_(), b0], dtype, orders=ORDERS[:2])


# ---- upfirdn2d (its gradient is upfirdn2d again) ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_upfirdn2d(emu, dtype):
    f = setup_filter([1, 3, 3, 1])
    cases = [  # (shape, up, down, padding, filter)
        ((2, 3, 9, 13), 2, 1, [2, 1, 2, 1], f),             # up: the polyphase windows
        ((2, 3, 17, 11), 1, 2, [1, 1, 1, 1], f),            # down
        ((1, 2, 70, 67), 1, 1, [1, 2, 1, 2], torch.randn(3, 4)),  # several tiles per plane, odd tails
        ((3, 2, 1, 1), 2, 1, [1, 1, 1, 1], f),              # 1-pixel images
        ((1, 1, 5, 6), [1, 2], [3, 1], [0, 0, -1, 2], torch.randn(2, 5)),  # per-axis factors, cropping
        ((1, 2, 6, 7), 4, 1, [3, 3, 3, 3], f),              # up 4
        ((2, 1, 19, 23), 1, 4, [1, 2, 3, 4], torch.randn(8, 8)),  # down 4, a large 2-D filter
        ((1, 1, 128, 256), 1, 8, 0, torch.randn(16, 16)),  # the tile shrinks until its shared memory fits 48 KiB
    ]
    for shape, up, down, pad, filt in cases:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert_parity(emu, lambda x: upfirdn2d(x, filt, up, down, pad, impl="ext"),
                      lambda x: upfirdn2d_ref(x, filt, up, down, pad), [x], dtype, orders=ORDERS[:2],
                      config=SMALL_GRID)
    x = torch.randn(2, 3, 12, 10, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    assert_parity(emu, lambda x: upfirdn2d(x, f, 2, 2, 1, impl="ext"), lambda x: upfirdn2d_ref(x, f, 2, 2, 1),
                  [x], dtype)
    # a strided view (large strides along H and W, read in place by the kernel; float64 keeps the view)
    x = torch.randn(2, 3, 20, 30, dtype=torch.float64)[:, :, ::2, 1::3].requires_grad_()
    assert_parity(emu, lambda x: upfirdn2d(x, f, 3, 3, [2, 1, 0, 4], impl="ext"),
                  lambda x: upfirdn2d_ref(x, f, 3, 3, [2, 1, 0, 4]), [x], dtype, orders=ORDERS[:2])


# ---- filtered_lrelu: mode 0 (forward, writes the mask), mode 1 (backward, applies it) --------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_filtered_lrelu(emu, dtype):
    fu, fd = setup_filter([1, 3, 3, 1]), setup_filter([1, 2, 1])
    cases = [  # (shape, fu, fd, up, down, padding, clamp)
        ((2, 3, 9, 10), fu, fd, 2, 2, [2, 1, 2, 1], None),            # separable both stages
        ((1, 2, 7, 13), torch.randn(3, 3), torch.randn(2, 4), 2, 1, [1, 2, 0, 1], 0.7),  # 2-D taps, clamp
        ((1, 2, 40, 45), fu, fd, 1, 2, 3, None),                     # several tiles, mask bytes across tiles
        ((2, 1, 1, 1), fu, fd, 2, 2, 2, 1.0),                        # 1-pixel images
        ((1, 2, 9, 70), fu, fu, 1, 1, 1, None),                      # rows wider than a tile, down 1
        ((2, 2, 15, 50), fu, torch.randn(6), 1, 3, 2, 0.5),          # down 3: mask bytes across tiles
        ((1, 1, 5, 9), torch.randn(8), torch.randn(8), 4, 4, 5, None),  # up 4, down 4
        ((1, 1, 40, 40), torch.randn(12, 12), torch.randn(12, 12), 4, 4, 6, None),  # tile shrunk to fit 48 KiB
    ]
    for shape, f1, f2, up, down, pad, clamp in cases:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        # b's gradient is torch's sum of x's over each plane (the kernel's part is x's): with unnormalised random
        # filters that sum cancels, so it is compared in float64 only
        b = torch.randn(shape[1], dtype=torch.float64, requires_grad=dtype == torch.float64)
        assert_parity(emu, lambda x, b: filtered_lrelu(x, f1, f2, b, up, down, pad, clamp=clamp, impl="ext"),
                      lambda x, b: filtered_lrelu_ref(x, f1, f2, b, up, down, pad, clamp=clamp), [x, b], dtype,
                      orders=ORDERS[:2], config=SMALL_GRID)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    assert_parity(emu, lambda x: filtered_lrelu(x, fu, fd, None, 2, 2, 2, impl="ext"),
                  lambda x: filtered_lrelu_ref(x, fu, fd, None, 2, 2, 2), [x], dtype)


# ---- grad_penalty: the block reduction with shuffles, and the per-sample scale -----------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("center", [None, 1.0])
def test_grad_penalty(emu, dtype, center):
    # per-sample sizes below and past the 512-thread block; (3, 5000) on 1 SM: the backward's grid-stride loop
    for shape in [(3, 5, 7, 11), (1, 1), (3, 5000)]:
        g = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert_parity(emu, lambda g: torch.stack(grad_penalty(g, center, impl="ext")),
                      lambda g: torch.stack(grad_penalty_ref(g, center)), [g], dtype, config=SMALL_GRID,
                      out_dtype=torch.float64 if dtype == torch.float64 else torch.float32)


# ---- spectral_norm: the whole power iteration in one block per weight --------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("u_first", [False, True])
def test_spectral_norm(emu, dtype, u_first):
    specs = [((5, 3, 3, 3), 0, 1), ((4, 6, 2, 3), 1, 3), ((3, 4, 5), 2, 0), ((7,), 0, 2), ((40, 33), 1, 1)]
    weights = [torch.randn(shape, dtype=torch.float64).to(dtype).double() for shape, _, _ in specs]
    dims, n_iters = [d for _, d, _ in specs], [n for _, _, n in specs]
    hw = [sn_ref.weight_matrix(w, d).shape for w, d in zip(weights, dims)]
    us0 = [torch.randn(h, dtype=torch.float64).to(dtype).double() for h, _ in hw]
    vs0 = [torch.randn(w, dtype=torch.float64).to(dtype).double() for _, w in hw]
    us_ref, vs_ref = [u.clone() for u in us0], [v.clone() for v in vs0]
    sigmas = [sn_ref.power_iteration(w, u, v, d, n, 1e-12, u_first)
              for w, u, v, d, n in zip(weights, us_ref, vs_ref, dims, n_iters)]
    for i, order in enumerate(ORDERS):
        us, vs = [u.to(dtype, copy=True) for u in us0], [v.to(dtype, copy=True) for v in vs0]
        before = stats(emu)["launches"]
        with emulate(emu, order=order, seed=i):
            out = power_iteration([w.to(dtype) for w in weights], us, vs, dims, n_iters, [1e-12] * len(specs),
                                  [u_first] * len(specs), impl="ext")
        assert stats(emu)["launches"] == before + 1  # every weight in one launch
        for k in range(len(specs)):
            assert rel_err(us[k].double(), us_ref[k]) < TOL[dtype], (order, k)
            assert rel_err(vs[k].double(), vs_ref[k]) < TOL[dtype], (order, k)
            assert rel_err(out[k].sigma.double(), sigmas[k]) < TOL[dtype], (order, k)


# ---- affine_sample, affine_resample (transposes: atomics), color_matrix --------------------------------------------

def _theta(n):
    angle = torch.rand(n, dtype=torch.float64) * 6.3
    c, s = angle.cos(), angle.sin()
    return torch.stack([torch.stack([c, -s, 0.1 * torch.randn(n, dtype=torch.float64)], 1),
                        torch.stack([s, c, 0.1 * torch.randn(n, dtype=torch.float64)], 1)], 1) * 1.1


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_affine_sample(emu, dtype):
    for shape, size in [((2, 3, 9, 14), (11, 7)), ((4, 1, 1, 1), (3, 2)), ((1, 2, 20, 17), (17, 20))]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        theta = _theta(shape[0])
        matrix = theta if dtype == torch.float64 else theta.float()
        assert_parity(emu, lambda x: affine_sample(x, matrix, size, impl="ext"),
                      lambda x: affine_sample_ref(x, matrix.double(), size), [x], dtype, config=SMALL_GRID)


def _g_inv(n):
    theta = _theta(n)
    return torch.cat([theta, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(n, 1, 3)], 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_affine_resample(emu, dtype):
    for shape in [(2, 3, 9, 14), (1, 2, 33, 18), (3, 1, 2, 3)]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        g_inv = _g_inv(shape[0])
        assert_parity(emu, lambda x: affine_resample(x, g_inv.to(x.dtype if x.dtype == torch.float64 else
                                                                  torch.float32), impl="ext"),
                      lambda x: affine_resample_ref(x, g_inv), [x], dtype, config=SMALL_GRID)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_color_matrix(emu, dtype):
    for shape in [(3, 3, 9, 31), (2, 1, 1, 1), (1, 4, 17, 16), (5, 2, 3, 3)]:
        n, c = shape[:2]
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        m64, o64 = torch.randn(n, c, c, dtype=torch.float64), torch.randn(n, c, dtype=torch.float64)
        m, o = (m64, o64) if dtype == torch.float64 else (m64.float(), o64.float())
        assert_parity(emu, lambda x: color_matrix(x, m, o, impl="ext"),
                      lambda x: color_matrix_ref(x, m.double(), o.double()), [x], dtype, config=SMALL_GRID)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    m, o = torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    mm, oo = (m, o) if dtype == torch.float64 else (m.float(), o.float())
    assert_parity(emu, lambda x: color_matrix(x, mm, oo, impl="ext"), lambda x: color_matrix_ref(x, m, o), [x],
                  dtype)


# ---- the model proves itself: the mistakes it exists to catch are caught ---------------------------------------------

def _mutant(name: str, old: str, new: str):
    """The emulation extension with kernels/<name> edited (``old`` must occur exactly once)."""
    source = (ROOT / "kernels" / name).read_text()
    assert source.count(old) == 1, f"the mutation no longer applies to kernels/{name}"
    return load(build(replace={name: source.replace(old, new)}))


def _grad_penalty_errors(module, g):
    want = grad_penalty_ref(g.double())[0]
    errors = {}
    for order in ORDERS:
        with emulate(module, order=order, seed=1):
            errors[order] = rel_err(grad_penalty(g, impl="ext")[0].double(), want)
    return errors


def test_missing_barrier_fails_in_some_order(emu):
    """grad_penalty's reduction without the barrier between the warp sums and their reduction by warp 0: some
    order reads a warp sum before its warp wrote it (poisoned shared memory: NaN) or after, so the orders disagree;
    with the barrier every order is exact."""
    g = torch.randn(2, 3000, dtype=torch.float64)
    assert all(e < 1e-12 for e in _grad_penalty_errors(emu, g).values())
    mutant = _mutant("grad_penalty.cu", "warp_sums[threadIdx.x >> 5] = acc;\n  __syncthreads();",
                     "warp_sums[threadIdx.x >> 5] = acc;\n")
    errors = _grad_penalty_errors(mutant, g)
    assert any(not e < 1e-12 for e in errors.values()), errors


def test_wrong_shuffle_width_changes_the_result(emu):
    """A warp sum shuffling within half warps (width 16) adds lanes 0-15 twice and never lanes 16-31 across."""
    g = torch.randn(2, 3000, dtype=torch.float64)
    mutant = _mutant("grad_penalty.cu", "__shfl_down_sync(0xffffffffu, v, offset)",
                     "__shfl_down_sync(0xffffffffu, v, offset, 16)")
    errors = _grad_penalty_errors(mutant, g)
    assert all(e > 1e-3 for e in errors.values()), errors


def _color_matrix_call(module, x, order="ascending"):
    m, o = torch.randn(x.shape[0], 3, 3), torch.randn(x.shape[0], 3)
    with emulate(module, order=order, max_grid_z=1):
        return color_matrix(x, m, o, impl="ext")


def test_out_of_bounds_shared_write_is_caught(emu):
    """color_matrix staging its offsets one element too far: the write past ``coef`` is reported with the variable,
    its declaration line and the block."""
    mutant = _mutant("color_matrix.cu", "coef[C * C + threadIdx.x] =", "coef[C * C + 1 + threadIdx.x] =")
    with pytest.raises(RuntimeError, match=r"shared-memory write out of bounds: byte \d+ of coef "
                                           r"\(kernels/color_matrix.cu:\d+\).*"):
        _color_matrix_call(mutant, torch.randn(2, 3, 5, 7))


def test_barrier_not_reached_is_reported(emu):
    """color_matrix's pixels past the image ``return`` instead of ``continue``: on a GPU the next image's barrier
    hangs or corrupts; here it is an error naming the barrier's line and the threads that exited."""
    mutant = _mutant("color_matrix.cu", "if (p >= a.pixels) continue;", "if (p >= a.pixels) return;")
    with pytest.raises(RuntimeError, match=r"__syncthreads at kernels/color_matrix.cu:\d+ is never reached by "
                                           r"threads \(35, 0, 0\)"):
        _color_matrix_call(mutant, torch.randn(2, 3, 5, 7))
    _color_matrix_call(mutant, torch.randn(1, 3, 5, 7))  # one image: no barrier after the exit, no error


@pytest.mark.skipif(os.environ.get("GANFAST_CUDA_EMU_ASAN") == "1", reason="already under AddressSanitizer")
def test_under_address_sanitizer():
    """The float32 parity tests of every kernel again, with the kernels and the scheduler under AddressSanitizer
    (out-of-bounds global or shared memory aborts the run)."""
    env = {**asan_environment(), "GANFAST_CUDA_EMU_ASAN": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__,
                          "-k", "float32 and not mutant and not address_sanitizer"],
                         env=env, capture_output=True, text=True, cwd=Path(__file__).parent)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    # and the sanitizer is live: color_matrix reading one channel past each pixel overruns x for the last image
    source = (ROOT / "kernels" / "color_matrix.cu").read_text()
    old = "E::load(x, xi + k * a.x_stride[1])"
    assert source.count(old) == 1
    overrun = source.replace(old, "E::load(x, xi + (k + 1) * a.x_stride[1])")
    script = (f"import sys, torch; sys.path.insert(0, {str(Path(__file__).parent)!r}); import cuda_emulation as ce;"
              "from ganfast.ops import color_matrix;"
              f"m = ce.load(ce.build(sanitize=True, replace={{'color_matrix.cu': {overrun!r}}}));"
              "ctx = ce.emulate(m); ctx.__enter__();"
              "color_matrix(torch.randn(2, 3, 5, 7), torch.randn(2, 3, 3), torch.randn(2, 3), impl='ext')")
    # from the tests' folder, so that ganfast is the one the test process imports (an installed package), not the
    # source tree, which has no compiled extension after a non-editable install
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    assert run.returncode == 99 and "heap-buffer-overflow" in run.stderr, run.stderr[-3000:]
