"""The train step of a rosinality-style G and D (tests/rosinality_standin/new/model.py: StyledConv, ToRGB with
upsampling, Blur, EqualLinear with the fused activation, ResBlock D; D loss + R1 under no_weight_gradients, then G
loss + path length, gradients of both) on ganfast's ops (``patch_rosinality``) vs the same step on their op.

Their op is, by default, the stand-in copy's own path: on the CPU the copies' CPU branch (``upfirdn2d_native``:
zero insertion + conv2d per channel; ``F.leaky_relu(input + bias) * scale``), the path every CPU user of these
code bases runs. On a GPU the default is the stand-in's autograd Functions on a plain-PyTorch stand-in of their
extension, not their kernels: ``--their-op DIR`` (or ``GANFAST_BENCH_ROSINALITY_OP``) takes a real copy's ``op``
folder instead (e.g. stylegan2-pytorch/op on a GPU machine with nvcc: their JIT-compiled CUDA ops).

    python benchmarks/test_bench_rosinality.py --sizes 32 64 128 --batch 4 --channels 32 --rounds 5

prints per size both times and the ratio (their time / ganfast's, > 1: ganfast faster), with the load average
before and after; ``pytest benchmarks/test_bench_rosinality.py`` runs a tiny smoke of both variants.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension
from bench_support import DEVICE, ON_GPU, synced

import ganfast

STANDIN = Path(__file__).resolve().parents[1] / "tests" / "rosinality_standin"


def _no_compiling(*args, **kwargs):
    raise RuntimeError("ganfast's variant compiles nothing")


def load_models(root: Path, their_op: str | None = None):
    """(their model module, ganfast's model module): two copies of the stand-in package under ``root``; theirs is
    imported as it is (with ``their_op``'s op folder, or the stand-in op with its extension build answered by the
    plain-PyTorch stand-in), ganfast's under ``patch_rosinality`` (the patch is undone afterwards; its modules keep
    ganfast's functions)."""
    for name in ("rosinality_theirs", "rosinality_ganfast"):
        shutil.copytree(STANDIN / "new", root / name)
    if their_op:
        shutil.rmtree(root / "rosinality_theirs" / "op")
        shutil.copytree(their_op, root / "rosinality_theirs" / "op")
    sys.path.insert(0, str(root))
    sys.path.insert(0, str(STANDIN))
    import fake_ext
    build = torch.utils.cpp_extension.load
    try:
        if not their_op:
            torch.utils.cpp_extension.load = lambda *args, **kwargs: fake_ext
        theirs = importlib.import_module("rosinality_theirs.model")
        torch.utils.cpp_extension.load = _no_compiling
        with ganfast.patch_rosinality():
            ours = importlib.import_module("rosinality_ganfast.model")
    finally:
        torch.utils.cpp_extension.load = build
    assert ours.FusedLeakyReLU.__ganfast_patch__ and not getattr(theirs.FusedLeakyReLU, "__ganfast_patch__", False)
    return theirs, ours


def step_runner(model, size: int, batch: int, channels: int):
    """A callable running one train step (both networks, every penalty) of fresh seeded models on ``DEVICE``."""
    torch.manual_seed(0)
    g = model.Generator(size, channels=channels).to(DEVICE)
    d = model.Discriminator(size, channels=channels).to(DEVICE)
    real = torch.randn(batch, 3, size, size, device=DEVICE)
    z = torch.randn(batch, 32, device=DEVICE)
    return synced(lambda: model.train_step(g, d, real, z))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_models(tmp_path_factory.mktemp("rosinality"), os.environ.get("GANFAST_BENCH_ROSINALITY_OP"))


@pytest.mark.parametrize("size", [32, 64] if ON_GPU else [8])
@pytest.mark.parametrize("variant", ["ganfast", "theirs"])
def test_rosinality_train_step(benchmark, models, size, variant):
    theirs, ours = models
    batch, channels = (16, 128) if ON_GPU else (2, 8)
    run = step_runner(ours if variant == "ganfast" else theirs, size, batch, channels)
    losses = run()["losses"]
    assert torch.isfinite(losses).all()
    benchmark.group = f"rosinality train step {batch}x3x{size}x{size}, {channels} channels"
    benchmark.extra_info.update(variant=variant, images=batch)
    benchmark(run)


def main(argv=None) -> int:
    from cpu_table import measure
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of timed calls per size (roughly)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--their-op", default=os.environ.get("GANFAST_BENCH_ROSINALITY_OP"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as root:
        theirs, ours = load_models(Path(root), args.their_op)
        print(f"rosinality train step (D + R1, G + path length), batch {args.batch}, {args.channels} channels, "
              f"{DEVICE}, torch {torch.__version__}, {torch.get_num_threads()} threads; their op: "
              f"{args.their_op or 'the stand-in copy (its CPU branch; on a GPU, NOT their CUDA kernels)'}; "
              f"load {load_start}", flush=True)
        for size in args.sizes:
            variants = {"ganfast": step_runner(ours, size, args.batch, args.channels),
                        "theirs": step_runner(theirs, size, args.batch, args.channels)}
            times = measure(variants, args.rounds, args.budget, per_call=True)
            print(f"  {size:4d} px: ganfast {times['ganfast'] * 1e3:9.1f} ms   theirs {times['theirs'] * 1e3:9.1f} ms"
                  f"   ratio {times['theirs'] / times['ganfast']:.2f}x", flush=True)
    print(f"load average before {load_start}, after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
