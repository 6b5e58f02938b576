"""R3GAN's discriminator step (RpGAN loss + R1 + R2, γ/2 each, backward into D's weights) on ganfast's R3GAN D:

    "two_pass"   R3GAN's own structure (its AdversarialTraining): D on the reals, D on the fakes, two
                 create_graph gradients, two penalty reductions, one backward through both graphs
                 (ganfast.reference.losses.rpgan_r1_r2: the two-pass oracle, on the same ganfast D)
    "fused"      ganfast.losses.rpgan_r1_r2(passes=1): one D forward on [reals; fakes], one gradient, one fused
                 reduction
    "auto"       ganfast.losses.rpgan_r1_r2's default (passes="auto"): "fused" on a GPU, two D passes on the CPU
    "nvlabs_ops" R3GAN's step as its own code runs on a CPU: "two_pass" with the D on NVlabs' reference
                 compositions of bias_act and upfirdn2d (bench_support.r3gan_on_nvlabs_ops; its CUDA plugins do
                 not serve CPU tensors); what ``patch_stylegan()`` speeds up
    "compiled"   the two-pass step with torch.compile(D): where the backend supports differentiating through
                 a compiled graph's gradient (create_graph=True); torch 2.x's AOTAutograd does not, and then the
                 variant is reported as not supported (pytest: skipped with the reason; script: the error line)

The eager variants compute the same numbers (two_pass and fused: tests/test_losses.py; nvlabs_ops:
test_nvlabs_ops_is_the_same_step below). On a GPU: the ``cifar`` preset's D (width 768, cardinality 96, 2 blocks
per stage) at 32 px, batch 64 and at 64 px, batch 32. On a CPU (pytest smoke): a small D at 8 px. The CPU figure
at 32 and 64 px comes from script mode:

    python benchmarks/test_bench_r3gan.py [--repeats 10] [--resolution 32] [--only VARIANT]

prints the median ms per step of each variant (interleaved rounds), the two_pass / fused and nvlabs_ops / auto
ratios, and the load average before and after; ``--only`` times one variant, for comparing whole processes.
``--keep-freed-memory`` first calls ``ganfast.malloc.keep_freed_memory()`` as ``ganfast train`` on the CPU and the
patched R3GAN step do (process-wide: every variant of that process runs with it): glibc otherwise maps large
activations afresh every step (at 64 px the one pass's 32 MiB buffers always) and the step pays their page faults.
R3GAN's own step runs with glibc's defaults, so compare ``--only nvlabs_ops`` against ``--only auto
--keep-freed-memory`` in fresh processes; interleaved in one process, all variants see the same allocator.
"""
import os
import time

import pytest
import torch
from bench_support import DEVICE, ON_GPU, r3gan_on_nvlabs_ops, synced

from ganfast import losses
from ganfast.models import R3GANDiscriminator
from ganfast.reference import losses as losses_ref

GAMMA = 0.05
if ON_GPU:
    CASES = [(32, 64, dict(width=768, cardinality=96, blocks=2)), (64, 32, dict(width=768, cardinality=96, blocks=2))]
else:
    CASES = [(8, 4, dict(width=16, cardinality=4, blocks=1))]
# script mode on a CPU: the stacked16-sized D (width 64, cardinality 8) at 32 px (batch 16) and 64 px (batch 8)
CPU_SCRIPT_CASES = [(32, 16, dict(width=64, cardinality=8, blocks=1)), (64, 8, dict(width=64, cardinality=8, blocks=1))]
VARIANTS = ["two_pass", "fused", "auto", "nvlabs_ops", "compiled"]


def _setup(resolution, batch, size, seed=0):
    torch.manual_seed(seed)
    stages = resolution.bit_length() - 2
    D = R3GANDiscriminator(img_resolution=resolution, img_channels=3, widths=[size["width"]] * stages,
                           cardinalities=[size["cardinality"]] * stages, blocks=[size["blocks"]] * stages).to(DEVICE)
    with torch.no_grad():  # trained-like weights: the fix-up init's zero convs would make the blocks identities
        for p in D.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    real = torch.randn(batch, 3, resolution, resolution, device=DEVICE)
    fake = torch.randn(batch, 3, resolution, resolution, device=DEVICE)
    return D, real, fake


def step_fn(variant, D, real, fake):
    """One D step's work (forward, penalties, backward into D's weights) for a variant; gradients are zeroed."""
    if variant == "nvlabs_ops":
        two_pass = step_fn("two_pass", D, real, fake)

        def on_nvlabs_ops():
            with r3gan_on_nvlabs_ops():
                return two_pass()
        return on_nvlabs_ops
    if variant in ("fused", "auto"):
        def loss():
            return losses.rpgan_r1_r2(D, real, fake, GAMMA, passes=1 if variant == "fused" else "auto")
    else:
        d = torch.compile(D) if variant == "compiled" else D

        def loss():
            return losses_ref.rpgan_r1_r2(d, real, fake, GAMMA)[0]

    def run():
        D.zero_grad(set_to_none=True)
        out = loss()
        out.backward()
        return out
    return run


def _supported(run):
    """None if ``run`` works, else its error's first line."""
    try:
        run()
        return None
    except Exception as exc:  # the compile backend's refusal
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}px-b{c[1]}")
def test_r3gan_d_step(benchmark, case, variant):
    resolution, batch, size = case
    D, real, fake = _setup(resolution, batch, size)
    run = step_fn(variant, D, real, fake)
    reason = _supported(run)
    if reason is not None:
        pytest.skip(f"{variant}: {reason}")
    benchmark.group = f"r3gan D step {resolution}px batch {batch}"
    benchmark.extra_info.update(variant=variant, resolution=resolution, batch=batch, **size)
    benchmark(synced(run))


def test_nvlabs_ops_is_the_same_step():
    """The baseline does the same work: NVlabs' compositions give ganfast's step's loss and weight gradients."""
    from ganfast import ops
    from ganfast.models import r3gan
    D, real, fake = _setup(8, 4, dict(width=16, cardinality=4, blocks=1))
    D, real, fake = D.double(), real.double(), fake.double()
    results = []
    for variant in ("auto", "nvlabs_ops"):
        loss = step_fn(variant, D, real, fake)()
        results.append((loss.detach(), [p.grad.clone() for p in D.parameters()]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert r3gan.bias_act is ops.bias_act and r3gan.downsample2d is ops.downsample2d  # restored on leaving


def _time(run, repeats):
    run()
    run()  # warm-up (allocator, first-call dispatch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        if ON_GPU:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def main(argv=None) -> None:
    import argparse
    parser = argparse.ArgumentParser(description="R3GAN D step: two passes vs one (and torch.compile)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per variant and round (median)")
    parser.add_argument("--resolution", type=int, action="append", help="only this case (repeatable)")
    parser.add_argument("--only", choices=["two_pass", "fused", "auto", "nvlabs_ops"],
                        help="time one variant alone (for a whole-process A/B comparison)")
    parser.add_argument("--keep-freed-memory", action="store_true", help="call ganfast.malloc.keep_freed_memory() "
                        "first (what ganfast train does on the CPU)")
    args = parser.parse_args(argv)
    if args.keep_freed_memory:
        from ganfast.malloc import keep_freed_memory
        print(f"keep_freed_memory: {keep_freed_memory()}")
    if not ON_GPU:
        torch.set_num_threads(int(os.environ.get("GANFAST_BENCH_THREADS", "1")))
    cases = [c for c in (CASES if ON_GPU else CPU_SCRIPT_CASES) if not args.resolution or c[0] in args.resolution]
    print(f"R3GAN D step (RpGAN + R1 + R2, backward), {DEVICE}, {torch.get_num_threads()} threads, torch "
          f"{torch.__version__}, median of {args.repeats} after two warm-ups; load average before "
          f"{os.getloadavg()}", flush=True)
    for resolution, batch, size in cases:
        D, real, fake = _setup(resolution, batch, size)
        label = f"  {resolution:3d} px batch {batch} width {size['width']}:"
        if args.only:
            print(f"{label} {args.only} {_time(step_fn(args.only, D, real, fake), args.repeats) * 1000:.1f} ms",
                  flush=True)
            continue
        timings = {}
        for variant in ("two_pass", "fused", "auto", "nvlabs_ops") * 2:  # interleaved: load changes hit all alike
            timings.setdefault(variant, []).append(_time(step_fn(variant, D, real, fake), args.repeats))
        best = {k: min(v) for k, v in timings.items()}
        reason = _supported(step_fn("compiled", D, real, fake))
        compiled = "not supported: " + reason if reason else \
            f"{_time(step_fn('compiled', D, real, fake), args.repeats) * 1000:.1f} ms"
        print(f"{label} two_pass {best['two_pass'] * 1000:.1f} ms, fused {best['fused'] * 1000:.1f} ms, ratio "
              f"{best['two_pass'] / best['fused']:.2f}x; auto {best['auto'] * 1000:.1f} ms; nvlabs_ops "
              f"{best['nvlabs_ops'] * 1000:.1f} ms, ratio {best['nvlabs_ops'] / best['auto']:.2f}x; "
              f"compiled: {compiled}",
              flush=True)
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
