"""The CPU table: ganfast against what a user would run instead, side by side in one process.

    python benchmarks/cpu_table.py [--rounds 5] [--out benchmarks/results/cpu]

writes SUMMARY.md (the table) and cpu_table.png (the ratios at a glance) under --out. Each row times ganfast and
its alternatives interleaved: every round runs each variant `reps` times and keeps the median, and a variant's
figure is its best round (min of medians), so that load from other processes on a shared machine, which only
ever adds time, disturbs the comparison as little as it can. Ratios are alternative time / ganfast time (> 1:
ganfast is faster). The alternatives are plain-torch compositions as NVlabs' code or a user writes them (eager),
torch.compile of them where it compiles, and torch's own spectral norm; ganfast.reference (the test oracle) is
used only where it is that composition.

    python benchmarks/cpu_table.py --threads 1,2        # every row at 1 and at 2 torch threads

Each row records the load average (1 min) before and after it; a row whose load, less the row's own threads
(the load average counts them), exceeds 0.5 (other processes competing for the cores) is marked "not a claim" in
SUMMARY.md: rerun it on a quiet machine.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_support import nvlabs_bias_act
from torch import nn

import ganfast
from ganfast.models import DCGANGenerator
from ganfast.sampling import to_uint8_nhwc

GAIN = math.sqrt(2)
CLAIM_LOAD = 0.5  # a row measured with more than this load average (1 min) beyond its own threads is not a claim


def _grad_runner(fn, inputs, grad_out):
    def run():
        y = fn(*inputs)
        return torch.autograd.grad(y, inputs, grad_out)
    return run


def rows_bias_act():
    torch.manual_seed(0)
    x, b = torch.randn(8, 128, 64, 64), torch.randn(128)

    def fast(x, b):
        return ganfast.ops.bias_act(x, b, act="lrelu", gain=GAIN, clamp=256)
    compiled = torch.compile(nvlabs_bias_act)
    fwd = {"ganfast": lambda: fast(x, b), "eager (NVlabs composition)": lambda: nvlabs_bias_act(x, b),
           "torch.compile of it": lambda: compiled(x, b)}
    xg, bg = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
    g = torch.randn_like(x)
    compiled_g = torch.compile(nvlabs_bias_act)
    bwd = {"ganfast": _grad_runner(fast, (xg, bg), g),
           "eager (NVlabs composition)": _grad_runner(nvlabs_bias_act, (xg, bg), g),
           "torch.compile of it": _grad_runner(compiled_g, (xg, bg), g)}
    return [("bias_act lrelu+clamp (8,128,64,64) fwd", fwd), ("bias_act lrelu+clamp (8,128,64,64) fwd+bwd", bwd)]


def rows_bias_act_small():
    """Unclamped lrelu (R3GAN calls bias_act without a clamp) at a small and a mid-size shape, forward+backward."""
    rows = []
    for shape in ((8, 64, 8, 8), (8, 128, 32, 32)):
        torch.manual_seed(0)
        x, b = torch.randn(shape, requires_grad=True), torch.randn(shape[1], requires_grad=True)
        g = torch.randn(shape)
        rows.append((f"bias_act lrelu, no clamp ({','.join(map(str, shape))}) fwd+bwd",
                     {"ganfast": _grad_runner(lambda x, b: ganfast.ops.bias_act(x, b, act="lrelu"), (x, b), g),
                      "eager (NVlabs composition)": _grad_runner(lambda x, b: nvlabs_bias_act(x, b, clamp=None),
                                                                 (x, b), g)}))
    return rows


def rows_upsample():
    from ganfast.reference.upfirdn2d import upsample2d as upsample2d_ref
    torch.manual_seed(0)
    x = torch.randn(8, 64, 64, 64, requires_grad=True)
    f = ganfast.ops.setup_filter([1, 3, 3, 1])
    g = torch.randn(8, 64, 128, 128)

    def ref(x):  # NVlabs' _upfirdn2d_ref: zero insertion, padding and a depthwise convolution
        return upsample2d_ref(x, f)
    compiled = torch.compile(ref)
    variants = {"ganfast": _grad_runner(lambda x: ganfast.ops.upsample2d(x, f), (x,), g),
                "eager (NVlabs composition)": _grad_runner(ref, (x,), g),
                "torch.compile of it": _grad_runner(compiled, (x,), g)}
    return [("upsample2d [1,3,3,1] (8,64,64,64) fwd+bwd", variants)]


def rows_synthesis_layer():
    from ganfast.nn.stylegan import SynthesisLayer
    torch.manual_seed(0)
    layer = SynthesisLayer(128, 128, w_dim=128, resolution=32, conv_clamp=256)
    x, w = torch.randn(8, 128, 32, 32, requires_grad=True), torch.randn(8, 128)
    g = torch.randn(8, 128, 32, 32)
    params = [x, *layer.parameters()]

    def step(module):
        def run():
            return torch.autograd.grad(module(x, w, noise_mode="const"), params, g)
        return run

    def with_ref(fn):
        def run():
            with ganfast.use_impl("ref"):
                return fn()
        return run

    compiled = torch.compile(layer)
    return [("SynthesisLayer 128 ch, 32 px, batch 8, fwd+bwd",
             {"ganfast": step(layer), "eager (reference ops)": with_ref(step(layer)),
              "torch.compile of it": with_ref(step(compiled))})]


def rows_d_step():
    from ganfast.models import StyleGAN2Discriminator
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(img_resolution=32, img_channels=3, channel_base=2048, channel_max=128)
    reals = torch.randn(8, 3, 32, 32)
    fakes = torch.randn(8, 3, 32, 32)

    def step():
        x = reals.detach().requires_grad_(True)
        logits = D(x)
        loss = F.softplus(-logits).mean() + F.softplus(D(fakes)).mean() + 5 * ganfast.losses.r1_penalty(logits, x)
        return torch.autograd.grad(loss, list(D.parameters()))

    def ref_step():
        with ganfast.use_impl("ref"):
            return step()
    return [("StyleGAN2 D step with R1, 32 px, batch 8", {"ganfast": step, "eager (reference ops)": ref_step})]


class _ResidualD(nn.Module):
    """A small R3GAN-style discriminator (residual blocks of two 3x3 convolutions with bias + leaky ReLU, average
    pooling between stages, a linear logit) whose bias + activation is ``bias_act(x, b, clamp)``: ganfast's op
    (what ``patch_stylegan()`` puts in place of NVlabs' ``bias_act``) or NVlabs' own composition."""

    def __init__(self, bias_act, clamp, channels: int = 64, resolution: int = 32):
        super().__init__()
        torch.manual_seed(0)
        self.bias_act, self.clamp = bias_act, clamp
        self.stem = nn.Conv2d(3, channels, 1, bias=False)
        self.stem_b = nn.Parameter(torch.zeros(channels))
        stages = int(math.log2(resolution // 4))
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(2 * stages))
        self.biases = nn.ParameterList(nn.Parameter(torch.randn(channels) * 0.1) for _ in range(2 * stages))
        self.logit = nn.Linear(channels * 16, 1)

    def forward(self, x):
        x = self.bias_act(self.stem(x), self.stem_b, self.clamp)
        for k in range(0, len(self.convs), 2):
            h = self.bias_act(self.convs[k](x), self.biases[k], self.clamp)
            h = self.bias_act(self.convs[k + 1](h), self.biases[k + 1], self.clamp)
            x = F.avg_pool2d(x + h, 2)
        return self.logit(x.flatten(1)).squeeze(1)


def rows_residual_d_step():
    """R3GAN's D step (RpGAN + R1 + R2: two double backwards through D) on an R3GAN-style D, with unclamped lrelu
    (R3GAN) and clamped (StyleGAN2's 256), against NVlabs' own ops and against ganfast's reference ops."""
    reals, fakes = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    rows = []
    for clamp in (None, 256.0):
        def ganfast_bias_act(x, b, clamp):
            return ganfast.ops.bias_act(x, b, act="lrelu", clamp=clamp)

        def nvlabs(x, b, clamp):
            return nvlabs_bias_act(x, b, clamp=clamp)
        ours, theirs = _ResidualD(ganfast_bias_act, clamp), _ResidualD(nvlabs, clamp)

        def step(D, penalty):
            def run():
                r, f = reals.detach().requires_grad_(True), fakes.detach().requires_grad_(True)
                real_logits, fake_logits = D(r), D(f)
                loss = F.softplus(fake_logits - real_logits).mean() + 5 * (penalty(real_logits, r)
                                                                            + penalty(fake_logits, f))
                return torch.autograd.grad(loss, list(D.parameters()))
            return run

        def plain_penalty(logits, x):  # R1 / R2 as a user writes them
            (g,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
            return g.square().sum([1, 2, 3]).mean()

        def ref_step(run=step(ours, ganfast.losses.r1_penalty)):
            with ganfast.use_impl("ref"):
                return run()
        name = "no clamp (R3GAN)" if clamp is None else "clamp 256"
        rows.append((f"R3GAN-style D step (RpGAN + R1 + R2), lrelu {name}, 32 px, batch 8",
                     {"ganfast": step(ours, ganfast.losses.r1_penalty),
                      "NVlabs' own ops (eager)": step(theirs, plain_penalty),
                      "eager (ganfast reference ops)": ref_step}))
    return rows


def rows_r3gan_d_step():
    """R3GAN's D step (RpGAN + R1 + R2) on R3GAN's networks (``ganfast.models.R3GANDiscriminator``: grouped 3x3
    convolutions, bias_act lrelu without clamp, [1,3,3,1] resampling through upfirdn2d) at 32 px (batch 16) and
    64 px (batch 8): as ``patch_stylegan()`` runs it (``losses.rpgan_r1_r2``, passes "auto", ganfast's ops), as
    R3GAN's own code runs on a CPU (two passes on NVlabs' compositions) and R3GAN's two passes on ganfast's ops
    (test_bench_r3gan.py's variants auto, nvlabs_ops and two_pass)."""
    from test_bench_r3gan import CPU_SCRIPT_CASES, _setup, step_fn
    rows = []
    for resolution, batch, size in CPU_SCRIPT_CASES:
        D, real, fake = _setup(resolution, batch, size)
        rows.append((f"R3GAN D step on R3GAN's D (width {size['width']}, cardinality {size['cardinality']}), "
                     f"{resolution} px, batch {batch}",
                     {"ganfast": step_fn("auto", D, real, fake),
                      "R3GAN's own on a CPU (two passes, NVlabs' ops)": step_fn("nvlabs_ops", D, real, fake),
                      "R3GAN's two passes on ganfast's ops": step_fn("two_pass", D, real, fake)}))
    return rows


def _sn_stack(kind: str, n: int, channels: int):
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(n)])
    for conv in model:
        torch.nn.utils.spectral_norm(conv)
    return ganfast.convert_spectral_norm(model) if kind == "ganfast" else model


def _biggan_d(kind: str, ch: int = 16):
    """The 40-layer BigGAN-like D of benchmarks/test_bench_spectral_norm.py (widths ch..16ch)."""
    widths = [1, 1, 2, 2, 4, 4, 8, 8, 8, 16, 16, 16, 16]
    layers, c_in = [], 3
    torch.manual_seed(0)
    for i, width in enumerate(widths):
        c_out = width * ch
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(0.2),
                   nn.Conv2d(c_out, c_out, 3, stride=2 if i in (1, 3, 5, 7) else 1, padding=1), nn.LeakyReLU(0.2),
                   nn.Conv2d(c_out, c_out, 1), nn.LeakyReLU(0.2)]
        c_in = c_out
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 1))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            torch.nn.utils.spectral_norm(m)
    return ganfast.convert_spectral_norm(model) if kind == "ganfast" else model


def rows_spectral_norm():
    from ganfast.nn.utils import spectral_norm_step
    x = torch.randn(1, 256, 4, 4)
    mods = {k: _sn_stack(k, 20, 256) for k in ("ganfast", "torch")}
    mods["ganfast"].load_state_dict(mods["torch"].state_dict())

    def fwd(model, inputs, step=False):
        def run():
            if step:
                spectral_norm_step(model)
            return model(inputs)
        return run
    train = {"ganfast": fwd(mods["ganfast"], x), "ganfast + spectral_norm_step": fwd(mods["ganfast"], x, True),
             "torch's spectral_norm": fwd(mods["torch"], x)}
    stack_eval = {k: _sn_stack(k, 20, 256).eval() for k in ("ganfast", "torch")}
    stack_eval["ganfast"].load_state_dict(stack_eval["torch"].state_dict())
    evals_stack = {"ganfast": fwd(stack_eval["ganfast"], x), "torch's spectral_norm": fwd(stack_eval["torch"], x)}
    d = {k: _biggan_d(k).eval() for k in ("ganfast", "torch")}
    d["ganfast"].load_state_dict(d["torch"].state_dict())
    img = torch.randn(2, 3, 32, 32)
    evals = {"ganfast": fwd(d["ganfast"], img), "ganfast + spectral_norm_step": fwd(d["ganfast"], img, True),
             "torch's spectral_norm": fwd(d["torch"], img)}
    return [("spectral norm, 20 x Conv2d(256,256,3) at 4x4, train fwd", train),
            ("spectral norm, 20 x Conv2d(256,256,3) at 4x4, eval fwd", evals_stack),
            ("spectral norm, 40-layer BigGAN-like D (16-256 ch) at 32 px, eval fwd", evals)]


SAMPLE_IMAGES = 2048


def rows_sample():
    """ganfast.sample with its defaults against the loop a user writes: torch.randn latents, batch 256, uint8."""
    torch.manual_seed(0)
    G = DCGANGenerator()  # the default generator: 16 px, 1 channel
    seeds = list(range(SAMPLE_IMAGES))

    def defaults():
        return sum(len(b.seeds) for b in ganfast.sample(G, seeds))

    def plain(batch=256):
        G.eval()
        with torch.no_grad():
            for i in range(0, len(seeds), batch):
                to_uint8_nhwc(G(torch.randn(len(seeds[i:i + batch]), G.z_dim))).numpy()
    return [(f"ganfast.sample defaults, DCGAN 16 px 1 ch, {SAMPLE_IMAGES:,} images",
             {"ganfast": defaults, "plain torch.randn eager loop, batch 256": plain})]


def rows_rosinality_step():
    """patch_rosinality vs the copies' own CPU path on a rosinality-style G and D (test_bench_rosinality.py)."""
    import tempfile

    from test_bench_rosinality import load_models, step_runner
    with tempfile.TemporaryDirectory() as root:  # the modules are imported: their files are no longer needed
        theirs, ours = load_models(Path(root))
    return [("rosinality-style train step (D + R1, G + path length), 64 px, batch 4, 32 channels",
             {"ganfast": step_runner(ours, 64, 4, 32),
              "their CPU path (upfirdn2d_native, F.leaky_relu)": step_runner(theirs, 64, 4, 32)})]


ROWS = [rows_bias_act, rows_bias_act_small, rows_upsample, rows_synthesis_layer, rows_d_step, rows_residual_d_step,
        rows_r3gan_d_step, rows_spectral_norm, rows_sample, rows_rosinality_step]


def measure(variants: dict, rounds: int, budget_s: float, per_call: bool = False) -> dict[str, float]:
    """Min over rounds of the median time (s) of `reps` calls per variant, variants interleaved: in blocks of `reps`
    calls of one variant, or (per_call) call by call, so that every variant meets the same load."""
    for fn in variants.values():  # warm-up: compiles, allocator, caches
        fn(), fn()
    t0 = time.perf_counter()
    for fn in variants.values():
        fn()
    call_s = (time.perf_counter() - t0) / len(variants)
    reps = max(1, min(20, int(budget_s / max(call_s, 1e-6) / rounds / len(variants))))
    best = {name: math.inf for name in variants}
    for _ in range(rounds):
        times = {name: [] for name in variants}
        order = [name for _ in range(reps) for name in variants] if per_call else \
            [name for name in variants for _ in range(reps)]
        for name in order:
            t = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t)
        for name in variants:
            best[name] = min(best[name], statistics.median(times[name]))
    return best


def _fmt(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


def write_outputs(results: list[tuple[str, dict, tuple[float, float], int]], out: Path, rounds: int,
                  load: tuple[float, float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if os.path.exists("/proc/cpuinfo") else []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
               platform.processor())
    lines = [
        "# ganfast on the CPU: side by side with what a user would run instead",
        "",
        (f"`python benchmarks/cpu_table.py` on {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
         f"(threads: in each row's title), float32. One process; variants interleaved, {rounds} rounds; each "
         "figure is the best round's median (min of medians), because the machine was shared with other jobs and "
         "load only adds time. Ratio = alternative / ganfast (> 1: ganfast faster). Absolute times vary with the "
         f"machine and its load; the ratios are the claim. Load average (1 min) {load[0]:.1f} at the start and "
         f"{load[1]:.1f} at the end. Load distorts ratios both ways (an OpenMP region waits for every thread of "
         "its team, ganfast's and torch's alike, and a descheduled one stalls it); seconds-long rows get few "
         "samples. See the README."),
        "",
        f"Rows whose load average (column \"load\": before → after the row) exceeded the row's own threads by more "
        f"than {CLAIM_LOAD:g} are marked *not a claim*: other processes competed for the cores while they ran (the "
        "1-minute load average counts the benchmark's own busy threads).",
        "",
        "| workload | ganfast | alternatives | ratio | load |",
        "|---|---|---|---|---|",
    ]
    for title, times, (before, after), threads in results:
        fast = times["ganfast"]
        others = {k: v for k, v in times.items() if k != "ganfast"}
        ours = "; ".join(f"{k.replace('ganfast + ', '+ ')} {_fmt(v)}" for k, v in others.items()
                         if k.startswith("ganfast"))
        alts = "; ".join(f"{k} {_fmt(v)}" for k, v in others.items() if not k.startswith("ganfast"))
        ratios = " / ".join(f"{v / fast:.2f}x" for k, v in others.items() if not k.startswith("ganfast"))
        cell = _fmt(fast) + (f" ({ours})" if ours else "")
        if title.startswith("ganfast.sample"):
            n = SAMPLE_IMAGES
            cell += f" = {n / fast:,.0f} img/s"
            alts += f" = {n / next(v for k, v in others.items() if not k.startswith('ganfast')):,.0f} img/s"
        claim = "" if max(before, after) - threads <= CLAIM_LOAD else " (*not a claim*)"
        lines.append(f"| {title} | {cell} | {alts} | {ratios} | {before:.1f} → {after:.1f}{claim} |")
    (out / "SUMMARY.md").write_text("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels, values, colors = [], [], []
    for title, times, *_ in results:
        best_alt = min(v for k, v in times.items() if not k.startswith("ganfast"))
        best_ours = min(v for k, v in times.items() if k.startswith("ganfast"))
        labels.append(title)
        values.append(best_alt / best_ours)
        colors.append("tab:green" if best_alt >= best_ours else "tab:red")
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(labels) + 1.5))
    ax.barh(range(len(labels)), values, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("fastest alternative's time / ganfast's fastest (log; > 1: ganfast faster)")
    ax.set_title("ganfast on the CPU vs the fastest plain-torch alternative")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.2f}x", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "cpu_table.png", dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timed calls per row (roughly)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu"))
    parser.add_argument("--only", default="", help="comma-separated row builders to run, e.g. rows_bias_act")
    parser.add_argument("--per-call", action="store_true",
                        help="alternate the variants call by call (default: in blocks of calls of one variant)")
    parser.add_argument("--threads", default="",
                        help="comma-separated torch thread counts to run every row at, e.g. 1,2 (default: torch's)")
    args = parser.parse_args(argv)
    chosen = [r for r in ROWS if not args.only or r.__name__ in args.only.split(",")]
    thread_counts = [int(t) for t in args.threads.split(",") if t] or [torch.get_num_threads()]
    load_start = os.getloadavg()[0]
    results = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for build in chosen:
            for title, variants in build():
                before = os.getloadavg()[0]
                times = measure(variants, args.rounds, args.budget, args.per_call)
                load = (before, os.getloadavg()[0])
                title = f"{title} [{threads} thread{'s' if threads > 1 else ''}]"
                results.append((title, times, load, threads))
                print(title, {k: _fmt(v) for k, v in times.items()}, f"load {load[0]:.1f} -> {load[1]:.1f}",
                      flush=True)
    write_outputs(results, Path(args.out), args.rounds, (load_start, os.getloadavg()[0]))
    print(f"wrote {args.out}/SUMMARY.md and cpu_table.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
