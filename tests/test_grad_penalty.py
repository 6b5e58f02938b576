"""grad_penalty: float64 parity with ganfast.reference.losses.grad_penalty (values, gradients, layouts, low
precision), gradcheck/gradgradcheck, the gradient graph (None where the reference has None), opcheck and
torch.compile, for every impl (Triton under the interpreter on CPU)."""
import pytest
import torch
from support import DEVICE, assert_grad_graph_parity, available_impls, record_grids, rel_err

from ganfast.ops import grad_penalty
from ganfast.reference import losses as ref

IMPLS = available_impls()
CENTERS = [None, 1.0]


def _images(batch, shape=(3, 6, 5)):
    return torch.randn(batch, *shape, device=DEVICE, dtype=torch.float64)


def _assert_same(got, want, tol=1e-12):
    assert rel_err(got, want) < tol


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("center", CENTERS + [0.0])
@pytest.mark.parametrize("shape", [(1, 3, 4, 5), (5, 7), (3, 2, 3, 3, 2), (2, 3, 100, 111)])
def test_grad_penalty_float64(impl, center, shape):
    """Forward and backward; the last shape spans several programs per sample in the Triton reduction."""
    g = torch.randn(shape, device=DEVICE, dtype=torch.float64, requires_grad=True)
    weights = torch.rand(2, shape[0], device=DEVICE, dtype=torch.float64)
    results = []
    for fn in (lambda g: grad_penalty(g, center, impl=impl), lambda g: ref.grad_penalty(g, center)):
        term, norm = fn(g)
        assert term.shape == norm.shape == (shape[0],) and term.dtype == norm.dtype == torch.float64
        results.append((term, norm, *torch.autograd.grad((weights[0] * term + weights[1] * norm).sum(), g)))
    for got, want in zip(*results):
        _assert_same(got, want)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
def test_grad_penalty_layouts(impl, layout):
    g = torch.randn(3, 4, 5, 6, device=DEVICE, dtype=torch.float64)
    g = g.to(memory_format=torch.channels_last) if layout == "channels_last" else g.transpose(0, 1)
    g.requires_grad_(True)
    term, norm = grad_penalty(g, 1.0, impl=impl)
    (dg,) = torch.autograd.grad((term * torch.arange(1.0, g.shape[0] + 1, dtype=torch.float64)).sum(), g)
    term_r, norm_r = ref.grad_penalty(g, 1.0)
    (dg_r,) = torch.autograd.grad((term_r * torch.arange(1.0, g.shape[0] + 1, dtype=torch.float64)).sum(), g)
    _assert_same(term, term_r)
    _assert_same(norm, norm_r)
    _assert_same(dg, dg_r)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("center", CENTERS)
def test_grad_penalty_gradcheck_gradgradcheck(impl, center):
    g = torch.randn(3, 2, 3, 2, device=DEVICE, dtype=torch.float64, requires_grad=True)

    def fn(g):
        term, norm = grad_penalty(g, center, impl=impl)
        return term, norm

    assert torch.autograd.gradcheck(fn, (g,))
    assert torch.autograd.gradgradcheck(fn, (g,))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("center", CENTERS)
def test_grad_penalty_zero_sample_has_finite_grad(impl, center):
    g = torch.randn(3, 4, device=DEVICE, dtype=torch.float64)
    g[1] = 0
    g.requires_grad_(True)
    grads = [torch.autograd.grad(sum(t.sum() for t in fn(g, center)), g)[0]
             for fn in (lambda g, c: grad_penalty(g, c, impl=impl), ref.grad_penalty)]
    assert torch.isfinite(grads[0]).all()
    _assert_same(*grads)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)])
def test_grad_penalty_low_precision(impl, dtype, tol):
    g64 = torch.randn(3, 3, 17, 19, device=DEVICE, dtype=torch.float64)
    g = g64.to(dtype).requires_grad_(True)
    term, norm = grad_penalty(g, 1.0, impl=impl)
    assert term.dtype == torch.float32 and norm.dtype == torch.float32
    (dg,) = torch.autograd.grad(term.sum(), g)
    assert dg.dtype == dtype
    g_ref = g.detach().double().requires_grad_(True)
    term_r, norm_r = ref.grad_penalty(g_ref, 1.0)
    (dg_r,) = torch.autograd.grad(term_r.sum(), g_ref)
    assert rel_err(term, term_r) < tol and rel_err(norm, norm_r) < tol and rel_err(dg, dg_r) < tol


def test_grad_penalty_compiles():
    g = torch.randn(4, 3, 5, device=DEVICE, requires_grad=True)
    compiled = torch.compile(lambda g: grad_penalty(g, 1.0, impl="ext")[0].mean(), fullgraph=True)
    out = compiled(g)
    (dg,) = torch.autograd.grad(out, g)
    out_r = ref.grad_penalty(g, 1.0)[0].mean()
    (dg_r,) = torch.autograd.grad(out_r, g)
    assert rel_err(out, out_r) < 1e-5 and rel_err(dg, dg_r) < 1e-5


def test_opcheck():
    g = torch.randn(3, 2, 5, device=DEVICE, dtype=torch.float64, requires_grad=True)
    norm = torch.rand(3, device=DEVICE, dtype=torch.float64) + 0.5

    def vec():
        return torch.randn(3, device=DEVICE, dtype=torch.float64, requires_grad=True)
    for impl in IMPLS:
        for center in (-1.0, 1.0):
            torch.library.opcheck(torch.ops.ganfast.grad_penalty.default, (g, center, impl))
            torch.library.opcheck(torch.ops.ganfast.grad_penalty_backward.default,
                                  (g, vec(), vec(), norm, center, impl))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("center", CENTERS)
@pytest.mark.parametrize("outputs", ["term", "norm", "both"])
def test_gradient_graph_matches_reference(impl, center, outputs):
    def pick(fn):
        def run(g):
            term, norm = fn(g)
            return {"term": term, "norm": norm, "both": (term, norm)}[outputs]
        return run
    assert_grad_graph_parity(pick(lambda g: grad_penalty(g, center, impl=impl)),
                             pick(lambda g: ref.grad_penalty(g, center)), (_images(3, (2, 3)),), ("g",))


def test_errors():
    with pytest.raises(TypeError, match="g must"):
        grad_penalty(torch.ones(2, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="batch dimension"):
        grad_penalty(torch.tensor(1.0))
    with pytest.raises(ValueError, match="center"):
        grad_penalty(torch.ones(2, 3), center=float("nan"))


def test_large_penalty_grids_walk_samples_and_grow_chunks(monkeypatch):
    """grad_penalty (forward, backward) and sample_lerp with more samples than grid axis 1 takes (the launchers'
    limit lowered to 3): the kernels stride over the samples; a sample longer than 3 chunks gets longer chunks."""
    from ganfast.ops import grad_penalty, sample_lerp
    from ganfast.reference.losses import grad_penalty as grad_penalty_ref
    from ganfast.reference.losses import sample_lerp as sample_lerp_ref
    from ganfast.triton import grad_penalty as triton_grad_penalty
    monkeypatch.setattr(triton_grad_penalty, "MAX_GRID_YZ", 3)
    grids = record_grids(monkeypatch, triton_grad_penalty, "_grad_penalty_fwd_kernel", "_grad_penalty_bwd_kernel",
                    "_sample_lerp_fwd_kernel")
    for shape in [(7, 3, 5, 5), (2, 5 * triton_grad_penalty.REDUCE_CHUNK + 7)]:  # 7 samples; 2 samples of 5+ chunks
        g = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        term, norm = grad_penalty(g, center=1.0, impl="triton")
        want_term, want_norm = grad_penalty_ref(g, 1.0)
        assert rel_err(term, want_term) < 1e-13 and rel_err(norm, want_norm) < 1e-13
        w = torch.randn(shape[0], dtype=torch.float64)
        got, want = (torch.autograd.grad((w * t).sum(), g)[0] for t in (term, want_term))
        assert rel_err(got, want) < 1e-12
    a, b, eps = torch.randn(7, 3, 4), torch.randn(7, 3, 4), torch.rand(7)
    assert rel_err(sample_lerp(a, b, eps, impl="triton"), sample_lerp_ref(a, b, eps)) < 1e-6
    launched = [grid for recorder in grids.values() for grid in recorder.grids]
    assert len(launched) == 5 and all(grid[1] <= 3 for grid in launched), launched
    assert grids["_grad_penalty_fwd_kernel"].grids[1] == (2, 3)  # 5+ chunks' worth in 3 longer ones
