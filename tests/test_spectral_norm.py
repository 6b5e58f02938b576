"""Spectral normalization: ganfast's hook / parametrization flavours and SN layers against torch's, the kernels
against the reference, one launch per model, DDP, torch.compile, opcheck, gradcheck and bad input."""
import copy
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from support import assert_grad_graph_parity, rel_err
from torch import nn

import ganfast
from ganfast import _ext
from ganfast.nn import SNConv2d, SNConvTranspose2d, SNEmbedding, SNLinear
from ganfast.nn.utils import parametrizations, remove_spectral_norm, spectral_norm, spectral_norm_step
from ganfast.ops.spectral_norm import power_iteration, power_iteration_one, spectral_norm_sigma
from ganfast.reference import spectral_norm as sn_ref

IMPLS = ["ext", "ref"] if _ext.loaded() else ["ref"]
TOL = {torch.float64: dict(rtol=1e-9, atol=1e-11), torch.float32: dict(rtol=2e-4, atol=2e-5)}

# (layer factory, input shape): odd sizes; ConvTranspose2d is normalised along dim 1
LAYERS = {
    "linear": (lambda: nn.Linear(7, 5), (3, 7)),
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5)),
    "convtranspose2d": (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2), (2, 3, 4, 4)),
}
FLAVOURS = {  # (torch's registration, ganfast's)
    "hook": (torch.nn.utils.spectral_norm, spectral_norm),
    "parametrization": (torch.nn.utils.parametrizations.spectral_norm, parametrizations.spectral_norm),
}


def _twins(flavour, layer, dtype, n_power_iterations, impl):
    """The same layer twice (same init), one with torch's spectral norm and one with ganfast's (same seed)."""
    make, _ = LAYERS[layer]
    torch_sn, ours_sn = FLAVOURS[flavour]
    torch.manual_seed(0)
    theirs = make().to(dtype)
    torch.manual_seed(0)
    ours = make().to(dtype)
    torch.manual_seed(1)
    torch_sn(theirs, n_power_iterations=n_power_iterations)
    torch.manual_seed(1)
    ours_sn(ours, n_power_iterations=n_power_iterations, impl=impl)
    return theirs, ours


def _gan_step(model, opt, x_real, x_fake):
    """Two forwards, one backward: D(real) − D(fake) + an R1-style input-gradient penalty (double backward)."""
    x_real = x_real.clone().requires_grad_()
    d_real = torch.tanh(model(x_real))
    d_fake = torch.tanh(model(x_fake))
    (grad,) = torch.autograd.grad(d_real.sum(), x_real, create_graph=True)
    loss = d_real.mean() - d_fake.mean() + grad.square().sum()
    opt.zero_grad()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    opt.step()
    return d_real.detach(), grads


def _assert_same_state(theirs, ours, tol):
    sd_t, sd_o = theirs.state_dict(), ours.state_dict()
    assert list(sd_t) == list(sd_o)
    for key in sd_t:
        torch.testing.assert_close(sd_o[key], sd_t[key], **tol, msg=key)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n_power_iterations", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_training_matches_torch(flavour, layer, dtype, n_power_iterations, impl):
    theirs, ours = _twins(flavour, layer, dtype, n_power_iterations, impl)
    tol = TOL[dtype]
    _assert_same_state(theirs, ours, tol)  # same u, v draws (and the 15 registration iterations)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.05)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.05)
    shape = LAYERS[layer][1]
    for _ in range(3):
        x_real, x_fake = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
        out_t, grads_t = _gan_step(theirs, opt_t, x_real, x_fake)
        out_o, grads_o = _gan_step(ours, opt_o, x_real, x_fake)
        torch.testing.assert_close(out_o, out_t, **tol)
        assert grads_o.keys() == grads_t.keys()
        for name in grads_t:
            torch.testing.assert_close(grads_o[name], grads_t[name], **tol, msg=name)
        _assert_same_state(theirs, ours, tol)
    # eval: the stored u, v, no iteration
    theirs.eval(), ours.eval()
    x = torch.randn(shape, dtype=dtype)
    torch.testing.assert_close(ours(x), theirs(x), **tol)
    _assert_same_state(theirs, ours, tol)


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_eval_sigma_reused_only_while_weight_and_vectors_unchanged(flavour):
    """Eval forwards reuse σ while W, u, v are unchanged; an in-place update, a swapped .data, a training forward
    (new u, v) or new buffers must each give torch's new value, with torch's gradients."""
    theirs, ours = _twins(flavour, "conv2d", torch.float64, 1, None)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    w_name = "weight_orig" if flavour == "hook" else "parametrizations.weight.original"

    def check():
        y_t, y_o = theirs(x), ours(x)
        torch.testing.assert_close(y_o, y_t, **TOL[torch.float64])
        g_t = torch.autograd.grad(y_t.square().sum(), theirs.get_parameter(w_name))[0]
        g_o = torch.autograd.grad(y_o.square().sum(), ours.get_parameter(w_name))[0]
        torch.testing.assert_close(g_o, g_t, **TOL[torch.float64])

    theirs.eval(), ours.eval()
    for change in (None, "in place", ".data", "train", "new tensors", "load_state_dict"):
        new_weight = torch.randn_like(theirs.get_parameter(w_name))
        for model in (theirs, ours):
            w = model.get_parameter(w_name)
            with torch.no_grad():
                if change == "in place":
                    w.mul_(1.5)
                elif change == ".data":  # no version change
                    w.data = new_weight.clone()
                elif change == "new tensors":
                    model.float().double()
                elif change == "load_state_dict":
                    model.load_state_dict({k: v.flip(0) for k, v in model.state_dict().items()})
            if change == "train":
                model.train()(x)
                model.eval()
        check()
        check()


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_state_dict_interchangeable_with_torch(flavour):
    theirs, ours = _twins(flavour, "conv2d", torch.float64, 1, None)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    for _ in range(2):
        theirs(x)  # move torch's u, v away from ours
    sd = theirs.state_dict()
    assert sd._metadata == ours.state_dict()._metadata  # version metadata included
    ours.load_state_dict(sd)
    _assert_same_state(theirs, ours, TOL[torch.float64])
    torch.testing.assert_close(ours(x), theirs(x), **TOL[torch.float64])
    fresh_torch, _ = _twins(flavour, "conv2d", torch.float64, 1, None)  # and a torch module loads ours
    fresh_torch.load_state_dict(ours.state_dict())
    _assert_same_state(ours, fresh_torch, TOL[torch.float64])


@pytest.mark.parametrize("flavour", list(FLAVOURS))
def test_deepcopy_after_forward(flavour):
    _, ours = _twins(flavour, "linear", torch.float64, 1, None)
    x = torch.randn(3, 7, dtype=torch.float64)
    y = ours(x)
    ema = copy.deepcopy(ours)  # torch's hook flavour raises here
    y.sum().backward()  # the original's graph is intact
    ema.eval(), ours.eval()
    torch.testing.assert_close(ema(x), ours(x))
    _assert_same_state(ours, ema, TOL[torch.float64])


def test_one_dimensional_weights_match_torch():
    for torch_sn, ours_sn in FLAVOURS.values():
        torch.manual_seed(0)
        theirs, ours = nn.BatchNorm1d(5).double(), nn.BatchNorm1d(5).double()
        with torch.no_grad():
            theirs.weight.normal_()
            ours.weight.copy_(theirs.weight)
        torch.manual_seed(1)
        torch_sn(theirs)
        torch.manual_seed(1)
        ours_sn(ours)
        x = torch.randn(4, 5, dtype=torch.float64)
        torch.testing.assert_close(ours(x), theirs(x))
        _assert_same_state(theirs, ours, TOL[torch.float64])


def test_remove_spectral_norm_matches_torch():
    theirs, ours = _twins("hook", "linear", torch.float64, 2, None)
    x = torch.randn(3, 7, dtype=torch.float64)
    theirs(x), ours(x)
    torch.nn.utils.remove_spectral_norm(theirs)
    remove_spectral_norm(ours)
    assert set(dict(ours.named_parameters())) == {"weight", "bias"}
    torch.testing.assert_close(ours.weight, theirs.weight)
    ours.load_state_dict(theirs.state_dict())  # no leftover spectral-norm load hook
    assert not ours._forward_pre_hooks and not ours._forward_hooks


@pytest.mark.parametrize("layer", ["linear", "conv2d", "convtranspose2d", "embedding"])
def test_sn_layers_match_torch_spectral_norm(layer):
    """SN layers fold 1/σ into the output: same init (seeded), outputs, grads (double backward), u, v."""
    dtype = torch.float64
    if layer == "embedding":
        torch_cls, ours_cls, args, kwargs = nn.Embedding, SNEmbedding, (10, 6), dict(padding_idx=2)
        inputs = lambda: torch.randint(0, 10, (4, 3))  # noqa: E731
    else:
        torch_cls, ours_cls = {"linear": (nn.Linear, SNLinear), "conv2d": (nn.Conv2d, SNConv2d),
                               "convtranspose2d": (nn.ConvTranspose2d, SNConvTranspose2d)}[layer]
        args = {"linear": (7, 5), "conv2d": (3, 4, 3), "convtranspose2d": (3, 4, 3)}[layer]
        kwargs = {} if layer == "linear" else dict(stride=2, padding=1)
        inputs = lambda: torch.randn(LAYERS[layer][1], dtype=dtype)  # noqa: E731
    torch.manual_seed(0)
    theirs = torch.nn.utils.spectral_norm(torch_cls(*args, **kwargs), n_power_iterations=2).to(dtype)
    torch.manual_seed(0)
    ours = ours_cls(*args, **kwargs, n_power_iterations=2).to(dtype)
    _assert_same_state(theirs, ours, TOL[dtype])
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.05)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.05)
    for _ in range(3):
        x = inputs()
        if layer == "embedding":  # no input gradient: penalise the output instead
            outs = []
            for model, opt in ((theirs, opt_t), (ours, opt_o)):
                y = model(x)
                loss = torch.tanh(y).sum() + y.square().mean()
                opt.zero_grad()
                loss.backward()
                outs.append(({n: p.grad.clone() for n, p in model.named_parameters()}, y.detach()))
                opt.step()
            (grads_t, out_t), (grads_o, out_o) = outs
        else:
            x_fake = inputs()
            out_t, grads_t = _gan_step(theirs, opt_t, x, x_fake)
            out_o, grads_o = _gan_step(ours, opt_o, x, x_fake)
        torch.testing.assert_close(out_o, out_t, **TOL[dtype])
        for name in grads_t:
            torch.testing.assert_close(grads_o[name], grads_t[name], **TOL[dtype], msg=name)
        _assert_same_state(theirs, ours, TOL[dtype])
    ours.load_state_dict(theirs.state_dict())  # torch checkpoints load into the SN layers


def _discriminator(kind, impl=None):
    """A small D mixing the three flavours: two hook-normalised convs, a parametrized conv, an SNLinear."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1)]
    if kind == "torch":
        convs = [torch.nn.utils.spectral_norm(convs[0]), torch.nn.utils.spectral_norm(convs[1]),
                 torch.nn.utils.parametrizations.spectral_norm(convs[2])]
        head = torch.nn.utils.spectral_norm(nn.Linear(8 * 4 * 4, 1))
    else:
        convs = [spectral_norm(convs[0], impl=impl), spectral_norm(convs[1], impl=impl),
                 parametrizations.spectral_norm(convs[2], impl=impl)]
        head = SNLinear(8 * 4 * 4, 1, impl=impl)
    return nn.Sequential(convs[0], nn.LeakyReLU(0.2), convs[1], nn.LeakyReLU(0.2), convs[2], nn.LeakyReLU(0.2),
                         nn.Flatten(), head).double()


@pytest.mark.skipif(not _ext.loaded(), reason="counts the C++ kernel's launches")
def test_spectral_norm_step_one_launch(monkeypatch):
    stepped, per_layer = _discriminator("ganfast", impl="ext"), _discriminator("ganfast", impl="ext")
    launches = []
    real_launch = _ext.launch
    monkeypatch.setattr(_ext, "launch", lambda name, *a: (launches.append(name), real_launch(name, *a)))
    opt_s = torch.optim.SGD(stepped.parameters(), lr=0.1)
    opt_p = torch.optim.SGD(per_layer.parameters(), lr=0.1)
    for _ in range(3):
        x_real, x_fake = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64)
        launches.clear()
        assert spectral_norm_step(stepped) == 4
        out_s = torch.tanh(stepped(x_real))
        assert launches == ["spectral_norm"]  # the forward used the step's results
        spectral_norm_step(stepped)
        loss_s = out_s.mean() - torch.tanh(stepped(x_fake)).mean()
        loss_p = torch.tanh(per_layer(x_real)).mean() - torch.tanh(per_layer(x_fake)).mean()
        for loss, opt in ((loss_s, opt_s), (loss_p, opt_p)):
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.testing.assert_close(loss_s, loss_p)
        _assert_same_state(per_layer, stepped, TOL[torch.float64])
    # a weight changed between the step and the forward: that layer iterates again (σ follows the current W)
    spectral_norm_step(stepped)
    with torch.no_grad():
        stepped[0].weight_orig.mul_(2)
    expected = _discriminator("ganfast", impl="ext")
    expected.load_state_dict(stepped.state_dict())
    for i in (2, 4, 7):  # the others use the step's result: what eval mode computes from the stored u, v
        expected[i].eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    launches.clear()
    torch.testing.assert_close(stepped(x), expected(x))
    assert launches.count("spectral_norm") == 1 + 4  # stepped: layer 0 alone; expected: its four layers


@pytest.mark.skipif(not _ext.loaded(), reason="auto's choice between the kernel and torch's mat-vecs")
def test_auto_uses_torch_matvecs_for_sigma_alone_and_small_weights(monkeypatch):
    """CPU auto: σ alone (eval) and iterations of small weights run torch's mat-vecs (the kernel's fixed cost of a
    call is larger there); larger weights in training run the kernel. Every way gives torch's numbers."""
    launches = []
    real_launch = _ext.launch
    monkeypatch.setattr(_ext, "launch", lambda name, *a: (launches.append(name), real_launch(name, *a)))
    for shape, train, kernel in (((8, 16), True, False), ((300, 300), True, True), ((300, 300), False, False)):
        torch.manual_seed(0)
        theirs = torch.nn.utils.spectral_norm(nn.Linear(shape[1], shape[0]).double())
        torch.manual_seed(0)
        ours = spectral_norm(nn.Linear(shape[1], shape[0]).double())
        theirs.train(train), ours.train(train)
        x = torch.randn(3, shape[1], dtype=torch.float64)
        launches.clear()
        for _ in range(2):
            y_ours, y_theirs = ours(x), theirs(x)
            torch.testing.assert_close(y_ours, y_theirs, **TOL[torch.float64])
            g_ours = torch.autograd.grad(y_ours.square().sum(), ours.weight_orig)[0]
            g_theirs = torch.autograd.grad(y_theirs.square().sum(), theirs.weight_orig)[0]
            torch.testing.assert_close(g_ours, g_theirs, **TOL[torch.float64])
        assert (launches == ["spectral_norm"] * 2) == kernel, (shape, train, launches)
        _assert_same_state(theirs, ours, TOL[torch.float64])
        launches.clear()
        spectral_norm_step(ours)  # leaves the weights whose forward takes torch's mat-vecs to that forward
        assert (launches == ["spectral_norm"]) == kernel, (shape, train, launches)
        torch.testing.assert_close(ours(x), theirs(x), **TOL[torch.float64])
        _assert_same_state(theirs, ours, TOL[torch.float64])


def test_convert_spectral_norm_keeps_state(monkeypatch):
    theirs, converted = _discriminator("torch"), _discriminator("torch")
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    theirs(x), converted(x)
    assert ganfast.convert_spectral_norm(converted, impl=IMPLS[0]) is converted
    _assert_same_state(theirs, converted, TOL[torch.float64])
    for _ in range(2):
        torch.testing.assert_close(converted(x), theirs(x))
    _assert_same_state(theirs, converted, TOL[torch.float64])
    launches = []
    real_launch = _ext.launch
    monkeypatch.setattr(_ext, "launch", lambda name, *a: (launches.append(name), real_launch(name, *a)))
    assert spectral_norm_step(converted) == 4  # all four torch SNs (three hooks, one parametrization) converted
    assert launches == (["spectral_norm"] if IMPLS[0] == "ext" else [])
    copy.deepcopy(converted)


def _ddp_worker(rank, world_size, init_file, out_file, x):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world_size)
    try:
        model = torch.nn.parallel.DistributedDataParallel(_ddp_model())
        _ddp_train(model, x.chunk(world_size)[rank])
        if rank == 0:
            torch.save(model.module.state_dict(), out_file)
        # Drop DDP's reducer while the process group is still registered: if the reducer held the last reference,
        # gloo's destructor would join a thread that waits for the GIL this thread holds (a torch deadlock).
        del model
    finally:
        torch.distributed.destroy_process_group()


def _ddp_model():
    torch.manual_seed(0)
    return nn.Sequential(spectral_norm(nn.Linear(6, 8)), nn.Tanh(),
                         parametrizations.spectral_norm(nn.Linear(8, 1))).double()


def _ddp_train(model, x):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def test_ddp_two_processes_match_single_process():
    torch.manual_seed(3)
    x = torch.randn(8, 6, dtype=torch.float64)
    with tempfile.TemporaryDirectory() as tmp:
        init_file, out_file = os.path.join(tmp, "init"), os.path.join(tmp, "state.pt")
        mp.spawn(_ddp_worker, args=(2, init_file, out_file, x), nprocs=2, join=True)
        ddp_state = torch.load(out_file)
    single = _ddp_model()
    _ddp_train(single, x)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp_state[key], value, msg=key)


def test_torch_compile_fullgraph_matches_eager():
    """All three flavours in one compiled graph (an explicit impl: the GANFAST_IMPL/use_impl lookup breaks graphs)."""
    eager, compiled_src = _discriminator("ganfast", IMPLS[0]), _discriminator("ganfast", IMPLS[0])
    compiled = torch.compile(compiled_src, fullgraph=True)
    for _ in range(2):
        x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        out_e, out_c = eager(x).sum(), compiled(x).sum()
        torch.testing.assert_close(out_c, out_e)
        grads_e = torch.autograd.grad(out_e, list(eager.parameters()))
        grads_c = torch.autograd.grad(out_c, list(compiled_src.parameters()))
        for got, want in zip(grads_c, grads_e):
            torch.testing.assert_close(got, want)
        _assert_same_state(eager, compiled_src, TOL[torch.float64])


@pytest.mark.parametrize("u_first", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_kernel_matches_reference_many_weights(dtype, u_first):
    """One call, weights of several shapes and dims (incl. 1-D and a middle dim), 0/1/3 iterations."""
    specs = [((5, 3, 3, 3), 0, 1), ((4, 6, 2, 3), 1, 3), ((3, 4, 5), 2, 0), ((7,), 0, 2), ((9, 11), 1, 1)]
    weights = [torch.randn(shape, dtype=dtype) for shape, _, _ in specs]
    dims = [dim for _, dim, _ in specs]
    n_iters = [n for _, _, n in specs]
    hw = [(sn_ref.weight_matrix(w, d).shape) for w, d in zip(weights, dims)]
    us = [torch.randn(h, dtype=dtype) for h, _ in hw]
    vs = [torch.randn(w, dtype=dtype) for _, w in hw]
    us_ref, vs_ref = [u.clone() for u in us], [v.clone() for v in vs]
    out = power_iteration(weights, us, vs, dims, n_iters, [1e-12] * 5, [u_first] * 5, impl=IMPLS[0])
    for k in range(len(specs)):
        sigma = sn_ref.power_iteration(weights[k], us_ref[k], vs_ref[k], dims[k], n_iters[k], 1e-12, u_first)
        tol = TOL[dtype]
        torch.testing.assert_close(us[k], us_ref[k], **tol)
        torch.testing.assert_close(vs[k], vs_ref[k], **tol)
        torch.testing.assert_close(out[k].sigma, sigma, **tol)
        torch.testing.assert_close(out[k].u, us[k]), torch.testing.assert_close(out[k].v, vs[k])
        if n_iters[k]:  # uᵀ W v with unit u, v never exceeds the largest singular value
            assert out[k].sigma <= torch.linalg.matrix_norm(sn_ref.weight_matrix(weights[k], dims[k]), ord=2) * 1.0001


@pytest.mark.skipif(not _ext.loaded(), reason="the C++ kernel's threading needs the extension")
@pytest.mark.parametrize("u_first", [False, True])
def test_kernel_results_independent_of_threads_and_neighbours(u_first):
    """A weight big enough for threaded mat-vecs (alone) and for one thread per weight (with others) gives the same
    bits either way, and matches the reference; a column count off the 16-lane blocks covers the tail."""
    shapes = [(520, 4099), (33, 250), (260, 4099)]
    weights = [torch.randn(shape) for shape in shapes]
    us0, vs0 = [torch.randn(h) for h, _ in shapes], [torch.randn(w) for _, w in shapes]
    alone = []
    for w, u, v in zip(weights, us0, vs0):
        u, v = u.clone(), v.clone()
        (res,) = power_iteration([w], [u], [v], [0], [2], [1e-12], [u_first], impl="ext")
        alone.append((res.sigma, u, v))
    us, vs = [u.clone() for u in us0], [v.clone() for v in vs0]
    together = power_iteration(weights, us, vs, [0] * 3, [2] * 3, [1e-12] * 3, [u_first] * 3, impl="ext")
    for k, (sigma, u, v) in enumerate(alone):
        assert torch.equal(together[k].sigma, sigma) and torch.equal(us[k], u) and torch.equal(vs[k], v), k
        u_ref, v_ref = us0[k].clone(), vs0[k].clone()
        sigma_ref = sn_ref.power_iteration(weights[k], u_ref, v_ref, 0, 2, 1e-12, u_first)
        torch.testing.assert_close(sigma, sigma_ref, **TOL[torch.float32])
        torch.testing.assert_close(u, u_ref, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_types_close_to_reference(dtype):
    """The kernels compute in float32 and store u, v, σ in the weight dtype (torch iterates in that dtype)."""
    w = torch.randn(16, 24)
    u, v = torch.randn(16), torch.randn(24)
    u32, v32 = u.clone(), v.clone()
    sigma32 = sn_ref.power_iteration(w, u32, v32, 0, 3, 1e-12, False)
    uh, vh = u.to(dtype), v.to(dtype)
    (res,) = power_iteration([w.to(dtype)], [uh], [vh], [0], [3], [1e-12], [False], impl=IMPLS[0])
    assert res.sigma.dtype == dtype
    assert rel_err(uh, u32) < 2e-2 and rel_err(vh, v32) < 2e-2
    assert rel_err(res.sigma, sigma32) < 2e-2


def test_opcheck():
    w = torch.randn(6, 2, 3, dtype=torch.float64)
    u, v = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    for impl in IMPLS:
        torch.library.opcheck(torch.ops.ganfast.spectral_norm_power_,
                              ([w], [u], [v], [0], [2], [1e-12], [False], impl))
    (res,) = power_iteration([w], [u], [v], [0], [1], [1e-12], [False])
    wg = w.clone().requires_grad_()
    torch.library.opcheck(torch.ops.ganfast.spectral_norm_sigma, (wg, res.u, res.v, res.sigma, 0))


def test_gradcheck_normalised_weight():
    """W ↦ W/σ(W), σ = uᵀ W_mat v from the kernel (eval mode: u, v fixed): gradcheck and gradgradcheck."""
    w = torch.randn(4, 3, 2, dtype=torch.float64)
    u, v = torch.randn(3, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    power_iteration([w], [u], [v], [1], [5], [1e-12], [True])

    def normalised(weight):
        (res,) = power_iteration([weight], [u], [v], [1], [0], [1e-12], [True])
        return weight / spectral_norm_sigma(weight, res, 1)

    def reference(weight):
        return weight / sn_ref.spectral_norm_sigma(weight, u, v, 1)

    wg = w.clone().requires_grad_()
    torch.testing.assert_close(normalised(wg), reference(wg))
    assert torch.autograd.gradcheck(normalised, (wg,))
    assert torch.autograd.gradgradcheck(normalised, (wg,))


def test_checked_arguments_are_remembered_but_never_wrongly():
    """A repeated call skips the checks; a call differing in anything they look at is checked again."""
    w, u, v = torch.randn(4, 6), torch.randn(4), torch.randn(6)
    power_iteration([w], [v], [u], [1], [1], [1e-12], [False], impl=IMPLS[0])  # dim 1: u of length 6
    power_iteration([w], [u], [v], [0], [1], [1e-12], [False], impl=IMPLS[0])
    with pytest.raises(TypeError, match="dims"):
        power_iteration([w], [u], [v], [False], [1], [1e-12], [False], impl=IMPLS[0])
    with pytest.raises(ValueError, match="n_power_iterations"):
        power_iteration([w], [u], [v], [0], [-1], [1e-12], [False], impl=IMPLS[0])
    with pytest.raises(ValueError, match="us\\[0\\] has length 4"):
        power_iteration([w], [u], [v], [1], [1], [1e-12], [False], impl=IMPLS[0])


def test_errors():
    w, u, v = torch.randn(4, 6), torch.randn(4), torch.randn(6)
    with pytest.raises(ValueError, match="us has 2 entries"):
        power_iteration([w], [u, u], [v], [0], [1], [1e-12], [False])
    with pytest.raises(ValueError, match=r"vs\[0\] has length 5"):
        power_iteration([w], [u], [torch.randn(5)], [0], [1], [1e-12], [False])
    with pytest.raises(TypeError, match=r"us\[0\] has dtype"):
        power_iteration([w], [u.double()], [v], [0], [1], [1e-12], [False])
    with pytest.raises(TypeError, match=r"weights\[1\] has dtype"):
        power_iteration([w, w.double()], [u, u.double()], [v, v.double()], [0, 0], [1, 1], [1e-12] * 2, [False] * 2)
    with pytest.raises(ValueError, match="dims"):
        power_iteration([w], [u], [v], [2], [1], [1e-12], [False])
    with pytest.raises(ValueError, match="n_power_iterations"):
        power_iteration([w], [u], [v], [0], [-1], [1e-12], [False])
    with pytest.raises(ValueError, match="eps"):
        power_iteration([w], [u], [v], [0], [1], [0.0], [False])
    with pytest.raises(ValueError, match="contiguous"):
        power_iteration([w], [torch.randn(8)[::2]], [v], [0], [1], [1e-12], [False])
    uv = torch.randn(10)
    with pytest.raises(ValueError, match="share memory"):
        power_iteration([w], [uv[:4]], [uv[2:8]], [0], [1], [1e-12], [False])
    with pytest.raises(ValueError, match=r"us\[0\] and us\[1\] share memory"):  # one module listed twice
        power_iteration([w, w], [u, u], [v, v.clone()], [0, 0], [1, 1], [1e-12] * 2, [False] * 2)
    with pytest.raises(TypeError, match="weights"):
        power_iteration([w.long()], [u], [v], [0], [1], [1e-12], [False])
    with pytest.raises(ganfast.ImplNotSupportedError, match="Triton"):
        power_iteration([w], [u], [v], [0], [1], [1e-12], [False], impl="triton")
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_norm(nn.Linear(3, 4), n_power_iterations=0)
    with pytest.raises(ValueError, match="n_power_iterations"):
        parametrizations.spectral_norm(nn.Linear(3, 4), n_power_iterations=0)
    with pytest.raises(ValueError, match="no parameter 'kernel'"):
        spectral_norm(nn.Linear(3, 4), name="kernel")
    with pytest.raises(ValueError, match="dim=2 is out of range"):
        spectral_norm(nn.Linear(3, 4), dim=2)
    with pytest.raises(IndexError, match="Dimension out of range"):
        parametrizations.spectral_norm(nn.Linear(3, 4), dim=2)
    with pytest.raises(RuntimeError, match="Cannot register two"):
        spectral_norm(torch.nn.utils.spectral_norm(nn.Linear(3, 4)))
    with pytest.raises(ValueError, match="not found"):
        remove_spectral_norm(nn.Linear(3, 4))
    with pytest.raises(ValueError, match="max_norm"):
        SNEmbedding(5, 3, max_norm=1.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradient_graph_matches_reference(impl):
    """W / σ with σ's gradient u vᵀ (u, v constants): the same first and second derivatives as the reference."""
    weight = torch.randn(4, 3, 2, dtype=torch.float64)
    u, v = torch.randn(4, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    (result,) = power_iteration([weight], [u], [v], [0], [2], [1e-12], [True], impl=impl)
    assert_grad_graph_parity(lambda w: w / spectral_norm_sigma(w, result, 0),
                             lambda w: w / sn_ref.spectral_norm_sigma(w, result.u, result.v, 0), (weight,), ("weight",))


# ---- complex weights (the reference path, as torch's parametrization: vdot and the conjugate transpose) -------

@pytest.mark.parametrize("dtype", [torch.float, torch.cfloat])
def test_new_spectral_norm_value(dtype):
    """torch's own check: a diagonal weight is divided by its largest |entry|, for real and complex weights."""
    m = nn.Linear(2, 2, dtype=dtype)
    with torch.no_grad():
        x = torch.diagonal(m.weight)
        m.weight = nn.Parameter(torch.diag(x))
        parametrizations.spectral_norm(m)
        torch.testing.assert_close(m.weight.data, torch.diag(x / x.abs().max()))


@pytest.mark.parametrize("dtype", [torch.cfloat, torch.cdouble])
def test_complex_weights_match_torch(dtype):
    """Same u, v, weights and gradients as torch's parametrization over a few training steps, and in eval mode."""
    torch.manual_seed(0)
    ours, theirs = nn.Linear(4, 3, dtype=dtype), nn.Linear(4, 3, dtype=dtype)
    theirs.load_state_dict(ours.state_dict())
    torch.manual_seed(1)
    torch.nn.utils.parametrizations.spectral_norm(theirs)
    torch.manual_seed(1)
    parametrizations.spectral_norm(ours)
    x = torch.randn(5, 4, dtype=dtype)
    for mode in ("train", "train", "eval"):
        ours.train(mode == "train")
        theirs.train(mode == "train")
        got, want = ours(x), theirs(x)
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(ours.parametrizations.weight[0]._u, theirs.parametrizations.weight[0]._u)
        (g_ours,) = torch.autograd.grad(got.abs().sum(), ours.parametrizations.weight.original)
        (g_theirs,) = torch.autograd.grad(want.abs().sum(), theirs.parametrizations.weight.original)
        torch.testing.assert_close(g_ours, g_theirs)


def test_complex_weights_need_the_reference():
    """The kernels are real-valued: an explicit impl="ext" is refused with the reason, and info says so."""
    with pytest.raises(ganfast.ImplNotSupportedError, match="real-valued; impl='ref'"):
        parametrizations.spectral_norm(nn.Linear(2, 2, dtype=torch.cfloat), impl="ext")
    assert ganfast.info()["reference_only_dtypes"]["spectral_norm"] == ["torch.complex64", "torch.complex128"]


def test_complex_sigma_gradient_matches_reference():
    """dσ/dW for σ = uᴴ W v in torch's complex convention (the conjugate Wirtinger derivative): g · u vᴴ."""
    weight = torch.randn(3, 4, dtype=torch.cdouble)
    u, v = torch.randn(3, dtype=torch.cdouble), torch.randn(4, dtype=torch.cdouble)
    (result,) = power_iteration([weight], [u], [v], [0], [3], [1e-12], [True], impl="ref")
    assert_grad_graph_parity(lambda w: w / spectral_norm_sigma(w, result, 0),
                             lambda w: w / sn_ref.spectral_norm_sigma(w, result.u, result.v, 0), (weight,), ("weight",))


@pytest.mark.skipif(not _ext.loaded(), reason="the layer fast path serves the C++ kernel")
@pytest.mark.parametrize("u_first", [False, True])
def test_layer_fast_path_matches_power_iteration_and_rechecks(u_first):
    """power_iteration_one (a layer's repeated one-weight call) gives power_iteration's bits at every step, and
    checks again, or leaves the fast path, whenever what its record depends on changes: a new weight (its shape
    checked), a wrong u, another default impl."""
    class Holder:
        pass
    holder, w = Holder(), torch.randn(40, 3, 3, 3)
    u, v = torch.randn(40), torch.randn(27)
    u2, v2 = u.clone(), v.clone()
    for n in (1, 1, 0, 2):
        got = power_iteration_one(holder, w, u, v, 0, n, 1e-12, u_first, "ext")
        (want,) = power_iteration([w], [u2], [v2], [0], [n], [1e-12], [u_first], impl="ext")
        assert holder._ganfast_plan is not None
        assert all(torch.equal(a, b) for a, b in zip(got, want)) and torch.equal(u, u2) and torch.equal(v, v2)
    with pytest.raises(ValueError, match="needs 54"):
        power_iteration_one(holder, torch.randn(40, 6, 3, 3), u, v, 0, 1, 1e-12, u_first, "ext")
    with pytest.raises(ValueError, match="us\\[0\\] has length 39"):
        power_iteration_one(holder, w, u[:39], v, 0, 1, 1e-12, u_first, "ext")
    with ganfast.use_impl("ref"):
        got = power_iteration_one(holder, w, u, v, 0, 1, 1e-12, u_first, None)
        assert holder._ganfast_plan is None  # the reference takes the general route
    want = sn_ref.power_iteration(w, u2, v2, 0, 1, 1e-12, u_first)
    torch.testing.assert_close(got.sigma, want, **TOL[torch.float32])
