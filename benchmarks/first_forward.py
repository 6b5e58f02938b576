"""Does a process's first forward round differently from its later ones? A diagnosis, in fresh processes.

    python benchmarks/first_forward.py                       # 8 processes at 2 threads, then 8 at 1 thread
    python benchmarks/first_forward.py --processes 20 --threads 2 --batch 64
    python benchmarks/first_forward.py --threads 0             # torch's default threads, set_num_threads not called

Each child process builds the default DCGAN generator's layers as plain torch modules (nn.Linear, ConvTranspose2d,
BatchNorm2d with non-trivial running statistics, ReLU, Conv2d, Tanh; eval mode, no ganfast), runs the same batch
through it three times and reports, for the first forward against the second and the second against the third,
the first layer whose output differs although its input did not (the op that rounds differently) and the largest
difference of the images. The parent prints one line per process and a tally, with the CPU, torch's parallel
setup and the load average before and after. ``ganfast.sample`` discards one batch-1 forward before its first
batch (README, "Determinism"): "later forwards equal" is what that relies on.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from collections import Counter


def child(threads: int, batch: int) -> dict:
    import torch
    from torch import nn
    if threads:  # 0: torch's default, and MKL's dynamic threading stays on (torch.set_num_threads turns it off)
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    width = 128  # DCGANGenerator(): z_dim 64, 16 px, 1 channel, base_channels 64
    layers = nn.Sequential(nn.Linear(64, width * 16), nn.Unflatten(1, (width, 4, 4)), nn.BatchNorm2d(width),
                           nn.ReLU(), nn.ConvTranspose2d(width, width // 2, 4, 2, 1), nn.BatchNorm2d(width // 2),
                           nn.ReLU(), nn.ConvTranspose2d(width // 2, width // 4, 4, 2, 1),
                           nn.BatchNorm2d(width // 4), nn.ReLU(), nn.Conv2d(width // 4, 1, 3, padding=1), nn.Tanh())
    with torch.no_grad():
        for m in layers.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    layers.eval()
    z = torch.randn(batch, 64)
    seen: list[list] = []
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda mod, inp, out, i=i: seen[-1].append((inp[0].clone(), out.clone())))
    for _ in range(3):
        seen.append([])
        with torch.no_grad():
            layers(z)

    def compare(a: list, b: list) -> dict:
        culprit = next((f"{i}:{type(layers[i]).__name__}" for i, ((ia, oa), (ib, ob)) in enumerate(zip(a, b))
                        if torch.equal(ia, ib) and not torch.equal(oa, ob)), None)
        return {"op": culprit, "max_diff": (a[-1][1] - b[-1][1]).abs().max().item()}
    return {"first_vs_second": compare(seen[0], seen[1]), "second_vs_third": compare(seen[1], seen[2])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=8)
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="0: torch's default")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.threads[0], args.batch)))
        return
    import torch
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.machine()) if os.path.exists("/proc/cpuinfo") else platform.machine()
    print(f"cpu: {model}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(torch.__config__.parallel_info().strip())
    load = os.getloadavg()[0]
    for threads in args.threads:
        tally: Counter = Counter()
        for n in range(args.processes):
            out = subprocess.run([sys.executable, __file__, "--child", "--threads", str(threads), "--batch",
                                  str(args.batch)], capture_output=True, text=True, check=True).stdout
            result = json.loads(out)
            first, later = result["first_vs_second"], result["second_vs_third"]
            tally["first forward differs" if first["op"] or first["max_diff"] else "first forward equal"] += 1
            tally["later forwards differ" if later["op"] or later["max_diff"] else "later forwards equal"] += 1
            print(f"threads {threads} process {n}: first vs second: {first['op'] or 'same'} "
                  f"(max diff {first['max_diff']:.1e}); second vs third: {later['op'] or 'same'} "
                  f"(max diff {later['max_diff']:.1e})")
        print(f"threads {threads}, batch {args.batch}, {args.processes} processes: {dict(sorted(tally.items()))}")
    print(f"load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
