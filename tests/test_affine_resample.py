"""affine_resample: the fused geometric augmentation pass against the reference composition (reflect pad,
upsample2d, grid_sample, downsample2d) in float64, its transpose as the adjoint, gradients of every order, opcheck,
torch.compile, half types, layouts, thread-count determinism and argument errors."""
import math
import os
import subprocess
import sys

import pytest
import torch
from support import DEVICE, assert_layout_parity, available_impls, grad_graph, rel_err

import ganfast
from ganfast.ops import affine_resample
from ganfast.ops.affine_resample import resample_args
from ganfast.reference.affine_resample import affine_resample as affine_resample_ref
from ganfast.reference.augment import geometric_plan, rotate2d, scale2d, translate2d

# The Triton kernel is tested below, called directly (under the interpreter the op-level tests would take minutes).
IMPLS = [impl for impl in available_impls() if impl != "triton"]


def _batch(values, n=None) -> torch.Tensor:
    """float64 (N,) tensor on DEVICE from a scalar (repeated n times) or a list."""
    values = [values] * n if n is not None else values
    return torch.tensor(values, dtype=torch.float64, device=DEVICE)


def _random_g_inv(n: int) -> torch.Tensor:
    """Per image: rotation, anisotropic scaling and fractional translation, as the bgc pipeline draws them."""
    angle = torch.rand(n, dtype=torch.float64, device=DEVICE) * 2 * math.pi
    s = 2 ** (torch.randn(n, 2, dtype=torch.float64, device=DEVICE) * 0.3)
    t = torch.randn(n, 2, dtype=torch.float64, device=DEVICE) * 1.5
    return translate2d(t[:, 0], t[:, 1]) @ rotate2d(angle) @ scale2d(s[:, 0], s[:, 1])


CASES = {  # name: (shape, G_inv builder)
    "identity": ((2, 3, 9, 9), lambda n: torch.eye(3, dtype=torch.float64, device=DEVICE).repeat(n, 1, 1)),
    "rotations": ((2, 2, 12, 12), lambda n: rotate2d(_batch([0.3, -1.1]))),
    "rotate90": ((1, 1, 8, 8), lambda n: rotate2d(_batch(math.pi / 2, n))),
    "anisotropic": ((2, 1, 10, 14), lambda n: scale2d(_batch([1.3, 0.8]), _batch([0.7, 1.25]))),
    "fractional_translation": ((2, 3, 11, 8), lambda n: translate2d(_batch([0.37, -2.6]), _batch([-1.6, 0.45]))),
    # zoomed out and turned by 45°: the corners reach far outside, the margins clamp to size − 1
    "maximal_padding": ((1, 2, 10, 10), lambda n: rotate2d(_batch(math.pi / 4, n)) @ scale2d(_batch(1.7, n),
                                                                                          _batch(1.7, n))),
    "odd_non_square_batch": ((3, 2, 7, 13), _random_g_inv),
    "multi_tile": ((2, 1, 70, 131), _random_g_inv),  # several kernel tiles per image, partial ones at the edges
}


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference_float64(impl, case):
    shape, make = CASES[case]
    G_inv = make(shape[0])
    x = torch.randn(shape, dtype=torch.float64, device=DEVICE, requires_grad=True)
    out = affine_resample(x, G_inv, impl=impl)
    assert out.shape == x.shape and out.is_contiguous()
    assert_layout_parity(out, affine_resample_ref(x, G_inv), x, "contiguous")


def test_identity_and_maximal_padding_plans():
    """The identity resamples to the image itself (the symlet-6 pair is orthonormal), and the 45° zoom-out case
    does reach the margins' limit (size − 1), so the reflection's whole range is exercised."""
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, device=DEVICE)
    identity = torch.eye(3, dtype=torch.float64, device=DEVICE).repeat(2, 1, 1)
    assert rel_err(affine_resample(x, identity, impl=IMPLS[0] if IMPLS else "ref"), x) < 1e-10
    shape, make = CASES["maximal_padding"]
    margins, _, _ = geometric_plan(make(1), shape[2], shape[3], 12)
    assert margins == (shape[3] - 1, shape[3] - 1, shape[2] - 1, shape[2] - 1)


@pytest.mark.parametrize("impl", IMPLS)
def test_layouts(impl):
    """channels_last and a non-contiguous view read the same values as a contiguous copy; the output is
    contiguous; the gradient matches the reference's."""
    base = torch.randn(2, 3, 9, 20, dtype=torch.float64, device=DEVICE)
    G_inv = _random_g_inv(2)
    for x in (base.to(memory_format=torch.channels_last), base[:, :, :, ::2], base.transpose(2, 3)):
        x = x.detach().requires_grad_()
        out = affine_resample(x, G_inv, impl=impl)
        assert out.is_contiguous()
        assert_layout_parity(out, affine_resample_ref(x, G_inv), x, "contiguous")


@pytest.mark.parametrize("impl", IMPLS)
def test_transpose_is_the_adjoint(impl):
    """<R x, y> = <x, Rᵀ y> for the registered pair, on a shape with several tiles and every margin in use."""
    x = torch.randn(2, 2, 40, 70, dtype=torch.float64, device=DEVICE)
    y = torch.randn_like(x)
    G_inv = _random_g_inv(2) @ scale2d(_batch(1.5, 2), _batch(1.5, 2))
    matrix, filt, margins = resample_args(G_inv, 40, 70, torch.float64)
    rx = torch.ops.ganfast.affine_resample(x, matrix, filt, margins, impl)
    rty = torch.ops.ganfast.affine_resample_transpose(y, matrix, filt, margins, impl)
    lhs, rhs = (rx * y).sum().item(), (x * rty).sum().item()
    assert abs(lhs - rhs) <= 1e-12 * max(abs(lhs), (rx.norm() * y.norm()).item())


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_graph(impl):
    """First derivative: the reference's. Second: None, R being linear (images are outside its derivative's graph,
    as with grid_sample and affine_sample), where the reference has an all-zero tensor: F.pad's reflect backward
    takes the input, which keeps images in the graph without any dependence."""
    G_inv = _random_g_inv(2)
    inputs = (torch.randn(2, 3, 8, 8, dtype=torch.float64, device=DEVICE),)
    (got_first, got_second) = grad_graph(lambda x: affine_resample(x, G_inv, impl=impl), inputs)
    (want_first, want_second) = grad_graph(lambda x: affine_resample_ref(x, G_inv), inputs)
    assert rel_err(got_first[0], want_first[0]) < 1e-12
    assert got_second[0] is None and (want_second[0] is None or not want_second[0].any())


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_and_gradgradcheck(impl):
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, device=DEVICE, requires_grad=True)
    G_inv = _random_g_inv(1)
    fn = lambda x: affine_resample(x, G_inv, impl=impl)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("impl", IMPLS)
def test_opcheck(impl):
    matrix, filt, margins = resample_args(_random_g_inv(2), 6, 9, torch.float32)
    for op in (torch.ops.ganfast.affine_resample.default, torch.ops.ganfast.affine_resample_transpose.default):
        x = torch.randn(2, 3, 6, 9, device=DEVICE, requires_grad=True)
        torch.library.opcheck(op, (x, matrix, filt, margins, impl))


@pytest.mark.parametrize("impl", IMPLS)
def test_torch_compile_fullgraph(impl):
    """The registered op traces (fake impl) and differentiates inside a compiled graph; the public function plans
    its margins on the host first."""
    x = torch.randn(2, 3, 10, 12, device=DEVICE, requires_grad=True)
    matrix, filt, margins = resample_args(_random_g_inv(2), 10, 12, torch.float32)

    def fn(x):
        return torch.ops.ganfast.affine_resample(x * 2, matrix, filt, margins, impl).square().sum()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    (got,) = torch.autograd.grad(compiled(x), x)
    (want,) = torch.autograd.grad(fn(x), x)
    assert rel_err(got, want) < 1e-6


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_lower_precision(impl, dtype):
    """Forward and input gradient against the float64 reference on the same (rounded) values; the kernels sum in
    float32, so only the storage rounding of the result remains for the half types."""
    x = torch.randn(2, 3, 12, 10, device=DEVICE).to(dtype).requires_grad_()
    G_inv = _random_g_inv(2)
    out = affine_resample(x, G_inv, impl=impl)
    x64 = x.detach().double().requires_grad_()
    ref = affine_resample_ref(x64, G_inv)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert out.dtype == dtype and rel_err(out, ref) < tol
    dy = torch.randn(out.shape, device=DEVICE).to(dtype)
    grad_ref = torch.autograd.grad(ref, x64, dy.double())[0]
    grad = torch.autograd.grad(out, x, dy)[0]
    assert grad.dtype == dtype and rel_err(grad, grad_ref) < tol


def test_ref_impl_is_the_reference_and_empty_batches():
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    G_inv = _random_g_inv(2).cpu()
    assert torch.equal(affine_resample(x, G_inv, impl="ref"), affine_resample_ref(x, G_inv))
    for shape in ((0, 3, 6, 6), (2, 0, 6, 6)):
        empty = torch.randn(shape)
        assert affine_resample(empty, G_inv[:shape[0]].float()).shape == shape


_DETERMINISM_SCRIPT = """
import os, sys, torch
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before the first kernel call sizes the thread pool
sys.path.insert(0, sys.argv[1])
import test_affine_resample as t
torch.save(t._determinism_outputs(), sys.argv[2])
"""


def _determinism_inputs():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 2, 70, 140, generator=gen)
    angle = torch.rand(3, generator=gen, dtype=torch.float64) * 6
    return (x, *resample_args(rotate2d(angle), 70, 140, torch.float32))


def _determinism_outputs():
    """Forward and transpose of a batch big enough for several threads (6 forward tasks per image, 3 images), and
    the transpose of one image (its channels split over the cores)."""
    x, matrix, filt, margins = _determinism_inputs()
    return [torch.ops.ganfast.affine_resample(x, matrix, filt, margins, "ext"),
            torch.ops.ganfast.affine_resample_transpose(x, matrix, filt, margins, "ext"),
            torch.ops.ganfast.affine_resample_transpose(x[:1], matrix[:1], filt, margins, "ext")]


@pytest.mark.skipif("ext" not in available_impls("cpu"), reason="the C++ kernels need the extension")
def test_bits_independent_of_thread_count_and_batch(tmp_path):
    """A process limited to one core (no worker threads) gets the bits this one gets with all its cores; an
    image run alone (same matrix and margins) gets the bits it gets within the batch."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: nothing to compare a single thread with")
    many = _determinism_outputs()
    path = tmp_path / "one_thread.pt"
    # a script file, run from tmp_path: ganfast is imported as this process imports it (the installed package,
    # or the tree on PYTHONPATH), never from a source tree that lacks the built extension
    script = tmp_path / "one_thread.py"
    script.write_text(_DETERMINISM_SCRIPT)
    subprocess.run([sys.executable, str(script), os.path.dirname(os.path.abspath(__file__)), str(path)], check=True,
                   cwd=tmp_path)
    for got, want in zip(torch.load(path), many):
        assert torch.equal(got, want)
    x, matrix, filt, margins = _determinism_inputs()
    for n in range(3):
        alone = torch.ops.ganfast.affine_resample(x[n:n + 1], matrix[n:n + 1], filt, margins, "ext")
        assert torch.equal(alone[0], many[0][n])


def test_auto_selection_and_info():
    entry = ganfast._dispatch.OPS["affine_resample"]
    expected = "ext" if "ext" in available_impls("cpu") else "ref"
    assert entry.resolve(None, torch.device("cpu"), torch.float32) == expected
    assert ganfast.info()["ops"]["affine_resample"]["cpu"]["impl"] == expected


def _one_line_error(exc_type, match, fn):
    with pytest.raises(exc_type, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_errors():
    x, G_inv = torch.randn(2, 1, 6, 6), torch.eye(3).repeat(2, 1, 1)
    _one_line_error(ValueError, "G_inv must have shape", lambda: affine_resample(x, G_inv[:1]))
    _one_line_error(ValueError, "images must be 4-D", lambda: affine_resample(x[0], G_inv))
    _one_line_error(TypeError, "images must have dtype", lambda: affine_resample(x.long(), G_inv))
    _one_line_error(TypeError, "G_inv must have dtype", lambda: affine_resample(x, G_inv.long()))
    _one_line_error(ValueError, "G_inv is on meta", lambda: affine_resample(x, G_inv.to("meta")))
    _one_line_error(ValueError, "impl must be one of", lambda: affine_resample(x, G_inv, impl="fast"))
    if "ext" in available_impls("cpu"):  # the kernel's own checks, one line each, through the registered op
        matrix, filt, _ = resample_args(G_inv.double(), 6, 6, torch.float32)
        _one_line_error(ValueError, r"reflection margins must be in \[0, size - 1\]",
                        lambda: torch.ops.ganfast.affine_resample(x, matrix, filt, [6, 0, 0, 0], "ext"))
        _one_line_error(ValueError, "matrix must be",
                        lambda: torch.ops.ganfast.affine_resample(x, matrix.double(), filt, [0] * 4, "ext"))
        _one_line_error(ValueError, "even number of taps",
                        lambda: torch.ops.ganfast.affine_resample(x, matrix, filt[:11].contiguous(), [0] * 4, "ext"))

# ---- the Triton kernel, called directly with the op's arguments (the interpreter is slow: tiny images, with
# canvas tiles of 16 and 32 putting tile edges inside them) --------------------------------------------------------

F64 = torch.float64


def _triton_run(src: torch.Tensor, G_inv: torch.Tensor, transpose: bool, canvas_tile: int = 64, dtype=F64
                ) -> torch.Tensor:
    from ganfast.triton.affine_resample import affine_resample as triton_affine_resample
    out = (torch.zeros if transpose else torch.empty)(src.shape, dtype=src.dtype, device=src.device)
    triton_affine_resample(out, src, *resample_args(G_inv, *src.shape[2:], dtype), transpose,
                           canvas_tile=canvas_tile)
    return out


TRITON_IDENTITY = torch.eye(3, dtype=F64)[None]
TRITON_CASES = {  # name: (shape, G_inv, canvas tile); 16 and 32 put tile edges inside the image
    "identity": ((1, 2, 8, 8), TRITON_IDENTITY, 64),
    "rotation": ((1, 1, 12, 10), rotate2d(_batch(0.5, 1)), 32),
    "anisotropic_scale": ((1, 1, 9, 12), scale2d(_batch(1.4, 1), _batch(0.7, 1)), 32),
    "fractional_translation": ((1, 1, 7, 6), translate2d(_batch(0.37, 1), _batch(-1.6, 1)), 16),
    "max_padding": ((1, 1, 6, 5), rotate2d(_batch(math.pi / 4, 1)) @ scale2d(_batch(1.9, 1), _batch(1.9, 1)), 16),
    "odd_batch": ((3, 1, 5, 7), torch.cat([rotate2d(_batch(2.0, 1)) @ translate2d(_batch(0.5, 1), _batch(0.25, 1)),
                                           scale2d(_batch(0.8, 1), _batch(1.3, 1)), rotate2d(_batch(-0.3, 1))]), 64),
}


@pytest.mark.parametrize("name", TRITON_CASES)
def test_triton_matches_reference_float64(name):
    shape, G_inv, tile = TRITON_CASES[name]
    G_inv = G_inv.to(DEVICE)
    x = torch.randn(shape, dtype=F64, device=DEVICE, requires_grad=True)
    margins = resample_args(G_inv, *shape[2:], F64)[2]
    if name == "max_padding":  # the corners reach past the reflection's limit: margins clamped to size − 1
        assert margins == [shape[3] - 1, shape[3] - 1, shape[2] - 1, shape[2] - 1]
    ref = affine_resample_ref(x, G_inv)
    assert rel_err(_triton_run(x.detach(), G_inv, False, tile), ref) < 1e-13
    dy = torch.randn(shape, dtype=F64, device=DEVICE)
    assert rel_err(_triton_run(dy, G_inv, True, tile), torch.autograd.grad(ref, x, dy)[0]) < 1e-13


def test_triton_transpose_is_the_adjoint():
    """⟨R x, y⟩ = ⟨x, Rᵀ y⟩ on an image of 3 × 2 tiles."""
    G_inv = (rotate2d(_batch(1.1, 1)) @ scale2d(_batch(0.9, 1), _batch(1.2, 1))
             @ translate2d(_batch(0.3, 1), _batch(-0.2, 1)))
    x = torch.randn(1, 1, 7, 5, dtype=F64, device=DEVICE)
    y = torch.randn(1, 1, 7, 5, dtype=F64, device=DEVICE)
    rx, rty = _triton_run(x, G_inv, False, 16), _triton_run(y, G_inv, True, 16)
    assert abs((rx * y).sum() - (x * rty).sum()) < 1e-13 * rx.abs().sum() * y.abs().max()


def test_triton_reads_inputs_by_stride():
    G_inv = rotate2d(_batch(0.4, 1))
    x = torch.randn(1, 2, 6, 10, dtype=F64, device=DEVICE)
    for transpose in (False, True):
        for view in (x.to(memory_format=torch.channels_last), x[..., ::2]):
            assert torch.equal(_triton_run(view, G_inv, transpose), _triton_run(view.contiguous(), G_inv, transpose))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 1e-2)])
def test_triton_lower_precision(dtype, tol):
    """Half types and float32 compute in float32 (the op's transposes run in float32 for half types)."""
    G_inv = (rotate2d(_batch(0.7, 1)) @ scale2d(_batch(1.1, 1), _batch(0.9, 1))
             @ translate2d(_batch(-0.4, 1), _batch(1.3, 1)))
    x = torch.randn(1, 2, 8, 9, dtype=F64, device=DEVICE, requires_grad=True)
    ref = affine_resample_ref(x, G_inv)
    out = _triton_run(x.detach().to(dtype), G_inv, False, dtype=torch.float32)
    assert out.dtype == dtype and rel_err(out, ref) < tol
    dy = torch.randn_like(ref)
    grad = _triton_run(dy.to(dtype).float(), G_inv, True, dtype=torch.float32)
    assert rel_err(grad, torch.autograd.grad(ref, x, dy.to(dtype).double())[0]) < 1e-5


@pytest.mark.skipif("triton" not in available_impls(), reason="triton is not available")
def test_triton_through_the_op():
    """impl="triton" forward and backward (the op's half-type and zeroing rules for the transpose)."""
    G_inv = rotate2d(_batch(0.6, 2)) @ scale2d(_batch([1.2, 0.9]), _batch([0.8, 1.1]))
    x = torch.randn(2, 1, 6, 7, dtype=F64, device=DEVICE, requires_grad=True)
    out = affine_resample(x, G_inv, impl="triton")
    ref = affine_resample_ref(x, G_inv)
    assert rel_err(out, ref) < 1e-13
    dy = torch.randn_like(ref)
    assert rel_err(torch.autograd.grad(out, x, dy)[0], torch.autograd.grad(ref, x, dy)[0]) < 1e-13
    half = affine_resample(x.detach().to(torch.bfloat16).requires_grad_(), G_inv, impl="triton")
    assert half.dtype == torch.bfloat16 and rel_err(half, ref) < 2e-2
