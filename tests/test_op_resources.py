"""Resources and capture safety of every op: no host syncs (what CUDA-graph capture needs), no memory growth over
10,000 calls, the same results from two threads at once, and on a GPU capture into a CUDA graph and replay.

Each entry of ``op_calls`` runs one op's forward and its gradients (to second order where training needs them:
bias_act, grad_penalty) on small fixed inputs. On CPU, the host-sync test runs the Python launchers and autograd
formulas, which CUDA shares, under a dispatcher-level watcher; the CUDA-only tests need a GPU and are skipped
without one.
"""
import ctypes
import gc
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ganfast
from ganfast._dispatch import OPS
from ganfast.ops import (affine_sample, bias_act, color_matrix, filtered_lrelu, grad_penalty, modulated_conv2d,
                         modulated_conv2d_bias_act, sample_lerp, setup_filter, upfirdn2d)
from ganfast.ops.affine_resample import resample_args
from ganfast.ops.spectral_norm import power_iteration
from support import available_impls

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class OpCall(NamedTuple):
    inputs: tuple[torch.Tensor, ...]            # what the call reads: refilled in place before a graph replay
    run: Callable[[], tuple[torch.Tensor, ...]]  # the op and its gradients


def _grads(y: torch.Tensor, inputs, create_graph: bool = False):
    return torch.autograd.grad(y.square().sum(), inputs, create_graph=create_graph)


def op_calls(impl: str, device) -> dict[str, OpCall]:
    """One small call per op that ``impl`` serves on ``device`` (float32)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(1)

    def randn(*shape, grad=False):
        return torch.randn(*shape, generator=gen).to(device).requires_grad_(grad)

    x, b = randn(2, 4, 6, 6, grad=True), randn(4, grad=True)
    weight, styles, noise, out_bias = randn(5, 4, 3, 3, grad=True), randn(2, 4, grad=True), randn(2, 1, 6, 6), randn(5)
    f = setup_filter([1, 3, 3, 1], device=device)
    w, u0, v0 = randn(8, 12), randn(8), randn(12)
    other, eps = randn(2, 4, 6, 6, grad=True), torch.rand(2, generator=gen).to(device)

    def bias_act_call():
        y = bias_act(x, b, act="lrelu", clamp=1.0, impl=impl)
        dx, db = _grads(y, (x, b), create_graph=True)
        return (y.detach(), dx.detach(), db.detach(), *_grads(dx, (x, b)))

    def upfirdn2d_call():
        y = upfirdn2d(x, f, up=2, padding=[2, 1], impl=impl)
        return y.detach(), *_grads(y, (x,))

    f_sep = setup_filter([1, 3, 3, 1], device=device, separable=True)

    def filtered_lrelu_call():  # StyleGAN3's layer: up 2, down 2, clamp; second order for path length
        y = filtered_lrelu(x, f_sep, f, b, up=2, down=2, padding=3, clamp=1.0, impl=impl)
        dx, db = _grads(y, (x, b), create_graph=True)
        return (y.detach(), dx.detach(), db.detach(), *_grads(dx, (x, b)))

    def modconv_call():
        y = modulated_conv2d_bias_act(x, weight, styles, noise, out_bias, padding=1, act="lrelu", clamp=2.0,
                                      impl=impl)
        return y.detach(), *_grads(y, (x, weight, styles))

    def modconv_up_call():
        y = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f, impl=impl)
        return y.detach(), *_grads(y, (x, weight, styles))

    def grad_penalty_call():
        term, norm = grad_penalty(x, center=1.0, impl=impl)
        (dx,) = torch.autograd.grad(term.sum(), x, create_graph=True)
        return (term.detach(), norm.detach(), dx.detach(), *_grads(dx, (x,)))

    u, v = u0.clone(), v0.clone()  # updated in place: the same tensors every call, as a module's buffers are

    def power_call():
        u.copy_(u0)
        v.copy_(v0)
        (result,) = power_iteration([w], [u], [v], dims=[0], n_power_iterations=[2], eps=[1e-12], u_first=[True],
                                    impl=impl)
        return result.sigma, u.clone(), v.clone()

    def sample_lerp_call():
        y = sample_lerp(x, other, eps, impl=impl)
        return y.detach(), *_grads(y, (x, other))

    theta = torch.tensor([[[0.8, -0.3, 0.1], [0.4, 0.9, -0.2]]]).repeat(2, 1, 1).to(device)

    def affine_sample_call():
        y = affine_sample(x, theta, (5, 7), impl=impl)
        (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        return (y.detach(), dx.detach(), *_grads(dx, (x,)))

    # the fused geometric pass through its registered op: the public function plans the margins on the host
    resample = resample_args(torch.eye(3).repeat(2, 1, 1) + 0.1 * torch.randn(2, 3, 3, generator=gen), 6, 6,
                             torch.float32)
    resample = (resample[0].to(device), resample[1].to(device), resample[2])

    def affine_resample_call():
        y = torch.ops.ganfast.affine_resample(x, *resample, impl)
        (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        return (y.detach(), dx.detach(), *_grads(dx, (x,)))

    matrix, offset = randn(2, 4, 4), randn(2, 4)

    def color_matrix_call():
        y = color_matrix(x, matrix, offset, impl=impl)
        (dx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        return (y.detach(), dx.detach(), *_grads(dx, (x,)))

    calls = {"bias_act": ("bias_act", (x, b), bias_act_call),
             "affine_sample": ("affine_sample", (x,), affine_sample_call),
             "affine_resample": ("affine_resample", (x,), affine_resample_call),
             "color_matrix": ("color_matrix", (x,), color_matrix_call),
             "upfirdn2d": ("upfirdn2d", (x,), upfirdn2d_call),
             "filtered_lrelu": ("filtered_lrelu", (x, b), filtered_lrelu_call),
             "modulated_conv2d_bias_act": ("modulated_conv2d", (x, weight, styles, noise, out_bias),
                                           modconv_call),
             "modulated_conv2d_up2": ("modulated_conv2d", (x, weight, styles), modconv_up_call),
             "grad_penalty": ("grad_penalty", (x,), grad_penalty_call),
             "spectral_norm_power": ("spectral_norm", (w, u0, v0), power_call),
             "sample_lerp": ("sample_lerp", (x, other, eps), sample_lerp_call)}
    return {name: OpCall(inputs, run) for name, (op, inputs, run) in calls.items()
            if not OPS[op].not_supported_reasons(impl, device, torch.float32)}


# -- host syncs ---------------------------------------------------------------------------------------------------
# aten ops that make the host wait for a GPU result (a tensor read on the host, or an output size that depends on
# values): any of them inside an op breaks CUDA-graph capture and stalls the launch queue.
_SYNCING = {"aten::_local_scalar_dense", "aten::item", "aten::is_nonzero", "aten::equal", "aten::allclose",
            "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive",
            "aten::repeat_interleave", "aten::bincount", "aten::histc"}


class HostSyncWatcher(TorchDispatchMode):
    """Records every aten op in ``_SYNCING`` that runs while it is active, also inside ganfast's registered ops
    (their implementations run below the Python dispatch key with the watcher pushed again)."""

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._schema.name in _SYNCING:
            self.syncs.append(func._schema.name)
        if func.namespace == "ganfast":
            with self:
                return func.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args, **kwargs)
        return func(*args, **kwargs)


def test_the_watcher_sees_syncs_inside_registered_ops(monkeypatch):
    """The watcher is not blind: a host read planted inside a ganfast op's implementation is reported."""
    launch = ganfast._ext.launch

    def launch_after_a_host_read(name, device, *args):
        float(torch.ones(()).sum())
        return launch(name, device, *args)
    monkeypatch.setattr(ganfast._ext, "launch", launch_after_a_host_read)
    with HostSyncWatcher() as watcher:
        upfirdn2d(torch.randn(1, 1, 4, 4), setup_filter([1, 1]), impl="ext")
    assert "aten::item" in watcher.syncs


@pytest.mark.parametrize("impl", ["ext"])
def test_ops_never_wait_for_the_device(impl, monkeypatch):
    """No op, gradient or second gradient reads a tensor on the host: the condition for CUDA-graph capture and
    for keeping the GPU's launch queue full. Python-side reads (tolist/numpy/cpu) are recorded too. (Triton
    under the CPU interpreter copies tensors to numpy by design, so it is checked by the GPU test below.)"""
    calls = op_calls(impl, "cpu")
    assert len(calls) == 10
    for name, call in calls.items():
        with HostSyncWatcher() as watcher:
            for method in ("tolist", "numpy", "cpu"):
                monkeypatch.setattr(torch.Tensor, method, _recording(watcher, method))
            call.run()
            monkeypatch.undo()
        assert watcher.syncs == [], f"{name} synchronises with the host: {watcher.syncs}"


def _recording(watcher: HostSyncWatcher, method: str):
    original = getattr(torch.Tensor, method)

    def recorded(t, *args, **kwargs):
        watcher.syncs.append(f"Tensor.{method}")
        return original(t, *args, **kwargs)
    return recorded


# -- memory growth ------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cuda_bytes() -> int:
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated()


def _release_free_heap() -> None:
    """Hands the C heap's free pages back to the OS (glibc) before each reading, so that RSS counts memory in
    use: a leak cannot hide in pages freed by earlier tests, nor a call's freed temporaries count as growth."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS is then a looser measure
        pass


def _growth_over_many_calls(call: OpCall, measure: Callable[[], int], calls: int = 10_000) -> int:
    for _ in range(300):                                         # warm-up: caches, allocator pools, compiles
        call.run()
    _release_free_heap()
    before = measure()
    for _ in range(calls):
        call.run()
    _release_free_heap()
    return measure() - before


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.usefixtures("one_thread")
def test_no_memory_growth_over_many_calls():
    """CPU RSS grows by less than 2 MiB over 10,000 calls of each extension op (forward and gradients)."""
    assert ganfast.info()["extension_loaded"]
    for name, call in op_calls("ext", "cpu").items():
        grown = _growth_over_many_calls(call, _rss_bytes)
        assert grown < 2 << 20, f"{name}: RSS grew by {grown / 2**20:.1f} MiB over 10,000 calls"


@pytest.mark.usefixtures("one_thread")
def test_memory_growth_check_catches_a_leak():
    """The measurement is not blind: 512 bytes kept per call (5 MB over 10,000 calls) exceeds the bound."""
    kept = []
    leaky = OpCall((), lambda: kept.append(bytearray(512)))
    assert _growth_over_many_calls(leaky, _rss_bytes) > 2 << 20


@needs_cuda
@pytest.mark.parametrize("impl", available_impls("cuda") if torch.cuda.is_available() else [])
def test_no_cuda_memory_growth_over_many_calls(impl):
    """CUDA memory allocated grows by less than 1 MiB over 10,000 calls of each op (forward and gradients); the
    spectral-norm descriptor cache may keep a few 512-byte blocks."""
    for name, call in op_calls(impl, "cuda").items():
        grown = _growth_over_many_calls(call, _cuda_bytes)
        assert grown < 1 << 20, f"{name}: {grown} more bytes of CUDA memory allocated after 10,000 calls"


def _assert_same_sums(got, expected, what: str) -> None:
    """The same results up to float32 summation order: torch's convolutions (cuDNN, oneDNN) may split their sums
    differently in another thread or stream."""
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()), msg=lambda m: f"{what}: {m}")


# -- two threads --------------------------------------------------------------------------------------------------
def _impls_on(device: str) -> list[str]:
    """CPU: the extension (the Triton interpreter is a test tool, not a multi-threaded runtime); CUDA: all."""
    return ["ext"] if device == "cpu" else available_impls("cuda")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
def test_ops_from_two_threads_at_once(device):
    """Two threads calling every op at once get the results of single-threaded calls. Each thread has its own
    (equal) inputs, since the spectral-norm iteration updates its u and v in place."""
    for impl in _impls_on(device):
        expected = {name: call.run() for name, call in op_calls(impl, device).items()}

        def work(_):
            calls = op_calls(impl, device)
            return [(name, call.run()) for _ in range(25) for name, call in calls.items()]

        with ThreadPoolExecutor(2) as pool:
            for results in pool.map(work, range(4)):
                for name, got in results:
                    _assert_same_sums(got, expected[name], f"{impl} {name}")


def _pool_sized_calls() -> dict[str, Callable[[], tuple[torch.Tensor, ...]]]:
    """Extension calls large enough that parallel_for splits them over the worker pool."""
    gen = torch.Generator().manual_seed(3)
    x, b = torch.randn(4, 32, 32, 32, generator=gen), torch.randn(32, generator=gen)
    f = setup_filter([1, 3, 3, 1])

    def bias_act_call():
        xg, bg = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = bias_act(xg, bg, act="lrelu", clamp=1.0, impl="ext")
        return (y.detach(), *_grads(y, (xg, bg)))

    def upfirdn2d_call():
        xg = x.clone().requires_grad_(True)
        y = upfirdn2d(xg, f, up=2, padding=[2, 1], impl="ext")
        return (y.detach(), *_grads(y, (xg,)))
    return {"bias_act": bias_act_call, "upfirdn2d": upfirdn2d_call}


def test_pool_sized_calls_from_many_threads_at_once():
    """Eight threads sharing the CPU worker pool (or running inline when it is busy) get bit-identical results."""
    calls = _pool_sized_calls()
    expected = {name: call() for name, call in calls.items()}

    def work(_):
        return [(name, call()) for _ in range(4) for name, call in calls.items()]

    with ThreadPoolExecutor(8) as pool:
        for results in pool.map(work, range(16)):
            for name, got in results:
                for g, e in zip(got, expected[name], strict=True):
                    assert torch.equal(g, e), name


def test_pool_sized_calls_same_bits_for_any_thread_count():
    """The chunks depend on the core count alone: one OpenMP thread (torch.set_num_threads(1)) or all of them
    give the same bits."""
    calls = _pool_sized_calls()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = {name: call() for name, call in calls.items()}
        torch.set_num_threads(max(2, os.cpu_count() or 2))
        for name, call in calls.items():
            assert all(torch.equal(g, e) for g, e in zip(call(), alone[name], strict=True)), name
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs Linux /proc")
def test_extension_shares_torchs_openmp_runtime():
    """One runtime answers to the soname the extension needs (libgomp.so.1): the one torch loaded, so ganfast's
    kernels run on torch's thread team rather than on a second pool competing for the cores. (Other libraries
    may bring runtimes of their own under other sonames, e.g. scikit-learn's hashed libgomp copy.)"""
    assert ganfast.info()["extension_loaded"]
    with open("/proc/self/maps") as maps:
        runtimes = {line.split()[-1] for line in maps if line.rstrip().endswith("/libgomp.so.1")}
    assert len(runtimes) == 1, runtimes
    torch_libgomp = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    if os.path.exists(torch_libgomp):
        assert os.path.samefile(runtimes.pop(), torch_libgomp)


def _child_runs_the_calls(calls, expected) -> None:
    torch.set_num_threads(1)  # torch's own OpenMP pool hangs in a forked child otherwise (DataLoader does the same)
    same = all(torch.equal(g, e) for name, call in calls.items() for g, e in zip(call(), expected[name], strict=True))
    os._exit(0 if same else 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_sized_calls_in_a_forked_child():
    """A child forked while another thread is inside the worker pool makes its own pool and finishes."""
    import multiprocessing
    import threading
    import warnings
    calls = _pool_sized_calls()
    expected = {name: call() for name, call in calls.items()}
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            calls["bias_act"]()

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: what this test is about
            children = [multiprocessing.get_context("fork").Process(target=_child_runs_the_calls,
                                                                      args=(calls, expected)) for _ in range(3)]
            for child in children:
                child.start()
        for child in children:
            child.join(timeout=120)
            if child.is_alive():
                child.kill()
                pytest.fail("a forked child hung in a CPU kernel")
            assert child.exitcode == 0, f"forked child exited with {child.exitcode}"
    finally:
        stop.set()
        thread.join()


# -- CUDA-graph capture -------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("impl", available_impls("cuda") if torch.cuda.is_available() else [])
def test_cuda_graph_capture_and_replay(impl):
    """Each op and its gradients captured into a CUDA graph replay on new input values like eager calls."""
    for name, call in op_calls(impl, "cuda").items():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):                            # warm-up off the capture stream, as torch asks
            for _ in range(3):
                call.run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = call.run()
        gen = torch.Generator(device="cuda").manual_seed(2)
        with torch.no_grad():
            for t in call.inputs:
                t.copy_(torch.randn(t.shape, generator=gen, device="cuda"))
        graph.replay()
        expected = call.run()
        _assert_same_sums(captured, expected, f"{impl} {name}")


@pytest.mark.skipif(not ganfast._ext.cuda_compiled(), reason="the extension was built without CUDA")
def test_large_cuda_launchers_reject_what_one_grid_cannot_hold():
    """The CUDA launchers check sizes before touching the device: a clear ValueError, never a wrapped grid."""
    from ganfast import _ext
    with pytest.raises(ValueError, match="batch too large"):
        _ext._C.grad_penalty_fwd_cuda(0, 2**31, 1, -1.0, 8, 8, 8, 0, 0)
    with pytest.raises(ValueError, match="too many weights"):
        _ext._C.spectral_norm_cuda(0, 2**31, 8, 8, 0, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error path where no GPU is usable")
@pytest.mark.skipif(not ganfast._ext.cuda_compiled(), reason="the extension was built without CUDA")
def test_large_cuda_launchers_raise_clear_errors_without_a_device():
    """Every CUDA entry point turns a failing CUDA call into a RuntimeError naming the call (no crash, no
    silent no-op)."""
    from ganfast import _ext
    calls = {
        "bias_act_cuda": (0, 2, 0, 4, 1, 1, 0.2, 1.0, -1.0, 8, 8, 0, 0, 0, 0),
        "upfirdn2d_cuda": (0, [1, 1, 2, 2, 2, 2], [1, 1, 1, 1], [0, 0], [1, 1], [4, 4, 2, 1], [4, 4, 2, 1], 8, 8, 8),
        "grad_penalty_fwd_cuda": (0, 2, 2, -1.0, 8, 8, 8),
        "grad_penalty_bwd_cuda": (0, 2, 2, -1.0, 8, 8, 8, 8, 8),
        "spectral_norm_cuda": (0, 1, 8, 8),
    }
    for name, args in calls.items():
        with pytest.raises(RuntimeError, match="ganfast CUDA error in"):
            getattr(_ext._C, name)(*args, 0, 0)


def test_every_kernel_refuses_an_unknown_dtype_code():
    """csrc/common.h's dispatch_dtype, used by every kernel, names the op and the code it cannot serve."""
    from ganfast import _ext
    t = torch.zeros(4)
    p = t.data_ptr()
    calls = {
        "bias_act": lambda: _ext._C.bias_act_cpu(7, 0, 0, 4, 1, 1, 0.0, 1.0, -1.0, p, p, 0, 0, 0, 0),
        "upfirdn2d": lambda: _ext._C.upfirdn2d_cpu(7, [1, 1, 2, 2, 2, 2], [1, 1, 1, 1], [0, 0], [1, 1],
                                                   [4, 4, 2, 1], [4, 4, 2, 1], p, p, p),
        "grad_penalty": lambda: _ext._C.grad_penalty_fwd_cpu(7, 1, 4, -1.0, p, p, p),
        "spectral_norm": lambda: _ext._C.spectral_norm_cpu(7, 0, 0, 0),
        "affine_resample": lambda: _ext._C.affine_resample_cpu(7, 0, [1, 1, 2, 2], [0, 0, 0, 0], 2, [4, 4, 2, 1],
                                                               [4, 4, 2, 1], p, p, p, p),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=f"{name}: unsupported dtype code 7"):
            call()
