"""Helpers shared by the tests (conftest.py sets the environment before this is imported)."""
from pathlib import Path

import numpy as np
import torch

from ganfast._dispatch import common_reasons

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def available_impls(device=DEVICE):
    """The non-reference impls that can run on ``device`` here."""
    return [impl for impl in ("ext", "triton") if not common_reasons(impl, torch.device(device))]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (complex128 for complex tensors); NaN anywhere makes it inf (never passes)."""
    wide = torch.complex128 if out.is_complex() or ref.is_complex() else torch.float64
    out, ref = out.to(wide), ref.to(wide)
    if torch.isnan(out).any() or torch.isnan(ref).any():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def assert_layout_parity(out: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, layout: str,
                         tol: float = 1e-12) -> None:
    """out matches ref, keeps channels_last when x had it, and sends the same gradient into x for a random
    cotangent."""
    assert rel_err(out, ref) < tol
    if layout == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    dy = torch.randn_like(ref)
    assert rel_err(torch.autograd.grad(out, x, dy)[0], torch.autograd.grad(ref, x, dy)[0]) < tol


def _probe(t: torch.Tensor) -> torch.Tensor:
    """A fixed, non-constant cotangent shaped like ``t`` (complex for complex ``t``)."""
    phase = torch.arange(t.numel(), dtype=torch.float64, device=t.device).reshape(t.shape) * 0.7 + 0.3
    return (torch.polar(torch.ones_like(phase), phase) if t.is_complex() else torch.cos(phase)).to(t.dtype)


def _contract(t: torch.Tensor) -> torch.Tensor:
    """⟨t, probe⟩, real (the real part for complex t, torch's convention for complex gradients)."""
    dot = (t * _probe(t)).sum()
    return dot.real if dot.is_complex() else dot


def grad_graph(fn, inputs):
    """First and second derivatives of ``fn(*inputs)`` contracted with fixed probes, one entry per input; an
    entry is None where autograd finds the input outside the derivative's graph (``allow_unused=True``)."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    loss = sum(_contract(o) for o in outs if o.requires_grad)
    first = torch.autograd.grad(loss, inputs, create_graph=True, allow_unused=True)
    used = [g for g in first if g is not None and g.requires_grad]
    if not used:
        return first, (None,) * len(inputs)
    second = torch.autograd.grad(sum(_contract(g) for g in used), inputs, allow_unused=True)
    return first, second


def assert_grad_graph_parity(fn, ref_fn, inputs, names, tol: float = 1e-10) -> None:
    """``fn`` has ``ref_fn``'s gradient graph: for the first and the second derivative, the same inputs get
    None (cannot influence it) and the others the same values. Adam skips a None gradient but steps a zero one,
    so a zero where the reference has None changes training."""
    got, want = grad_graph(fn, inputs), grad_graph(ref_fn, inputs)
    for order, (got_grads, want_grads) in enumerate(zip(got, want), start=1):
        for name, g, w in zip(names, got_grads, want_grads):
            assert (g is None) == (w is None), \
                f"order {order} d/d{name}: {'None' if g is None else 'a tensor'} but the reference gives " \
                f"{'None' if w is None else 'a tensor'}"
            if g is not None:
                assert rel_err(g, w) < tol, f"order {order} d/d{name}: rel err {rel_err(g, w)}"


class _GridRecorder:
    """Stands in for a @triton.jit kernel: records each launch's grid, then launches the kernel."""

    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(tuple(grid))
        return self.kernel[grid]


def record_grids(monkeypatch, module, *names) -> dict:
    """Replaces the Triton kernels ``names`` of ``module`` with recorders of their launch grids."""
    recorders = {name: _GridRecorder(getattr(module, name)) for name in names}
    for name, recorder in recorders.items():
        monkeypatch.setattr(module, name, recorder)
    return recorders


def sample_in_processes(runs, timeout: float = 300) -> None:
    """Runs ``ganfast sample`` once per ``(checkpoint, out, threads, *options)`` of ``runs``, each in a fresh process
    (so that its sampling is the process's first work) with ``threads`` torch CPU threads, all at once; fails
    with the first failing run's stderr."""
    import os
    import subprocess
    import sys

    import ganfast
    root = str(Path(ganfast.__file__).parents[1])
    procs = [subprocess.Popen([sys.executable, "-m", "ganfast.cli", "sample", "--checkpoint", str(checkpoint),
                               "--out", str(out), "--no-progress", *map(str, options)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": root})
             for checkpoint, out, threads, *options in runs]
    for proc in procs:
        _, stderr = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, stderr[-2000:]


def npz_samples(out) -> dict[int, tuple[bytes, object]]:
    """Seed -> (image bytes, label) of every npz shard in a sample folder."""
    import numpy as np
    found = {}
    for path in sorted(Path(out).glob("*.npz")):
        with np.load(path) as data:
            labels = data["labels"] if "labels" in data else [None] * len(data["seeds"])
            for seed, image, label in zip(data["seeds"].tolist(), data["images"], labels):
                found[seed] = (image.tobytes(), None if label is None else label.tolist())
    return found


class _LoadsArchive:
    """Pickles as a call of ``torch.jit.load`` on a TorchScript archive: the shape of NVlabs' detector .pkl files."""

    def __init__(self, archive: bytes):
        self.archive = archive

    def __reduce__(self):
        import io
        return torch.jit.load, (io.BytesIO(self.archive),)


def nvlabs_pickle(module: torch.nn.Module) -> bytes:
    """``module`` scripted and saved inside a pickle stream, as NVlabs ships its metric networks."""
    import io
    import pickle
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module.eval()), buffer)
    return pickle.dumps(_LoadsArchive(buffer.getvalue()), protocol=4)
def random_inception_state(seed: int = 0) -> dict:
    """FIDInceptionV3 weights drawn from ``seed`` (He-scaled convolutions, batch-norm statistics near 0 and 1) plus
    the 1008-way fc of pytorch-fid's file."""
    from ganfast.metrics.detectors import FIDInceptionV3
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in FIDInceptionV3().state_dict().items():
        if k.endswith("conv.weight"):
            sd[k] = torch.randn(v.shape, generator=g) * (2 / v[0].numel()) ** 0.5
        elif k.endswith(("bn.weight", "running_var")):
            sd[k] = 1 + 0.1 * torch.rand(v.shape, generator=g)
        elif k.endswith(("bn.bias", "running_mean")):
            sd[k] = 0.1 * torch.randn(v.shape, generator=g)
        else:
            sd[k] = v
    sd["fc.weight"], sd["fc.bias"] = 0.01 * torch.randn(1008, 2048, generator=g), torch.zeros(1008)
    return sd


def smooth_images(seed: int, shift: float, n: int, size: int) -> np.ndarray:
    """uint8 (n, size, size, 3): smooth random RGB images (8x8 noise upsampled, plus pixel noise), brightened by
    ``shift``; two seeds or shifts give two sets with a clear FID between them."""
    rng = np.random.RandomState(seed)
    images = []
    for _ in range(n):
        coarse = rng.rand(8, 8, 3) * 200 + shift
        img = np.kron(coarse, np.ones((size // 8, size // 8, 1))) + rng.randn(size, size, 3) * 20
        images.append(img.clip(0, 255).astype(np.uint8))
    return np.stack(images)
