"""The ``ganfast`` console script: ``info``, ``bench``, ``train``, ``sample`` and ``demo``."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys


def _number(kind, low: float, strict: bool = False, high: float = math.inf):
    """An argparse type: an int (``kind=int``) or a finite float in [low, high] (above ``low`` if ``strict``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < low or (strict and value == low) or value > high:
            bound = f"{'>' if strict else '>='} {low:g}" + (f" and <= {high}" if high < math.inf else "")
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text!r}")
        return value
    return parse


POSITIVE_INT, SEED = _number(int, 1), _number(int, 0, high=2**32 - 1)
POSITIVE, NONNEGATIVE, FINITE = _number(float, 0, strict=True), _number(float, 0), _number(float, -math.inf)


def _cmd_info(args) -> int:
    import ganfast
    from ganfast.info import format_info
    report = ganfast.info()
    print(json.dumps(report, indent=2) if args.json else format_info(report))
    return 0


def _cmd_bench(args) -> int:
    from ganfast.bench import format_table, run_bias_act_bench
    rows = run_bias_act_bench(device=args.device, shapes=args.shape, dtypes=args.dtype, repeats=args.repeats)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
        print(f"results written to {args.json}")
    return 0


def _train_overrides(args) -> dict:
    names = {"batch_size": "batch_size", "loss": "loss", "lr": ("lr_g", "lr_d"), "r1_gamma": "r1_gamma",
             "r1_interval": "r1_interval", "ema_kimg": "ema_kimg", "tick": "tick_steps",
             "snapshot_ticks": "snapshot_ticks", "pl_weight": "pl_weight"}
    overrides = {}
    for arg, fields in names.items():
        value = getattr(args, arg)
        if value is not None:
            for field in (fields if isinstance(fields, tuple) else (fields,)):
                overrides[field] = value
    if args.bf16:
        overrides["bf16"] = True
    return overrides


def _cmd_train(args) -> int:
    import torch.distributed as dist

    from ganfast.train.run import build_trainer, init_distributed
    device = init_distributed() if args.device is None else args.device
    trainer, default_steps = build_trainer(args.dataset, args.out, seed=args.seed, resolution=args.resolution,
                                           model=args.model, overrides=_train_overrides(args), device=device,
                                           progress=not args.no_progress)
    if args.resume and not trainer.resume(missing_ok=True) and trainer.rank == 0:
        print(f"resume: no checkpoint in {args.out} yet; starting the run from step 0")
    total = args.steps if args.steps is not None else default_steps
    if args.kimg is not None:
        total = max(1, -(-int(args.kimg * 1000) // trainer.config.batch_size))
    trainer.train(total)
    if trainer.rank == 0:
        print(f"done: {trainer.step} steps, {trainer.nimg / 1000:.1f} kimg; stats in "
              f"{args.out}/stats.jsonl, checkpoint in {args.out}/checkpoint.safetensors")
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


def _cmd_demo(args) -> int:
    import time

    import ganfast
    from ganfast.info import format_info
    from ganfast.train.run import build_trainer
    print(format_info(ganfast.info()).splitlines()[0])
    print("loading the digits; the metrics' digit classifier is trained on the first run, then cached")
    trainer, default_steps = build_trainer("digits", args.out, seed=args.seed, device=args.device,
                                           progress=not args.no_progress)
    print(f"\n== demo: a DCGAN learns scikit-learn's handwritten digits (16x16) on {trainer.device} ==")
    steps = args.steps or default_steps
    before = trainer.evaluate(trainer.G_ema)
    start = time.perf_counter()
    trainer.train(steps)
    seconds = time.perf_counter() - start
    after = trainer.evaluate(trainer.G_ema)
    grid = os.path.join(args.out, f"samples-{trainer.step:07d}.png")
    metrics = {"steps": trainer.step, "kimg": trainer.nimg / 1000, "seconds": seconds,
               "fd_untrained": before["fd"], "fd": after["fd"], "precision": after["precision"],
               "recall": after["recall"], "samples": grid}
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"""
trained {trainer.step} steps ({trainer.nimg / 1000:.0f} kimg) in {seconds:.0f} s.
  samples:  {grid}
            an 8x8 grid of the EMA generator's digits from fixed latents (earlier grids: samples-*.png)
  Frechet distance (features of a small CNN ganfast trained on the real digits; lower is better):
            untrained generator {before['fd']:.2f}  ->  trained {after['fd']:.2f}
  precision {after['precision']:.2f} (share of fakes that look like real digits),
  recall {after['recall']:.2f} (share of real digits the fakes cover), k=3 nearest neighbours
  per-tick statistics (losses, D accuracy, gradient norms, diversity): {args.out}/stats.jsonl
  metrics: {args.out}/metrics.json""")
    return 0


def _cmd_sample(args) -> int:
    import torch

    from ganfast.sampling import parse_shard, write_samples
    from ganfast.checkpoint import load_generator
    index, count = parse_shard(args.shard)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    index, count = index * world + rank, count * world  # torchrun ranks split this shard further
    device = args.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")
    G = load_generator(args.checkpoint, which=args.weights, device=device)
    report = write_samples(G, args.seeds, args.out, fmt=args.format, batch_size=args.batch_size,
                           shard=(index, count), shard_size=args.shard_size, workers=args.workers,
                           progress=not args.no_progress, truncation_psi=args.truncation,
                           noise_mode=args.noise_mode, dtype=args.dtype, compile=args.compile)
    print(f"shard {index}/{count}: {report}")
    return 0


def _set_threads(threads: int | None, device: str | None) -> None:
    """CPU training defaults to 1 torch thread: these small models ran 10-15x faster with 1 than with 2 threads
    on a busy 2-core machine (measured: ring8 12.4 vs 0.85 steps/s), and torchrun processes share the cores."""
    import torch
    on_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    if threads is not None or on_cpu:
        torch.set_num_threads(threads or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ganfast", description="Fused kernels for GAN training and sampling.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="what was built and which kernel each op uses")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("bench", help="time bias_act: ganfast vs eager reference (vs torch.compile on CUDA)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--shape", action="append", help="NxCxHxW, repeatable (default: per-device StyleGAN shapes)")
    p.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "float16"], help="repeatable")
    p.add_argument("--repeats", type=POSITIVE_INT, default=20)
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("train", help="train a GAN: ring8, grid25, digits or your own images / .npz")
    p.add_argument("--dataset", required=True, help="ring8, grid25, digits, an image folder, a .zip or a .npz")
    p.add_argument("--out", required=True, help="run folder: stats.jsonl, samples-*.png, checkpoint.safetensors")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=POSITIVE_INT,
                        help="total steps (default: 8000 for 2-D data, 3000 for images)")
    length.add_argument("--kimg", type=POSITIVE, help="total thousands of real images shown")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--batch-size", type=POSITIVE_INT, help="global batch (default: 256 for 2-D data, 64 for images)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint "
                   "(none yet, e.g. killed before the first snapshot: start afresh)")
    p.add_argument("--model", choices=["mlp", "dcgan", "sngan", "stylegan2"],
                   help="default: mlp for 2-D data, dcgan for images")
    p.add_argument("--pl-weight", type=NONNEGATIVE, help="path-length penalty weight (stylegan2; 0: off)")
    p.add_argument("--resolution", type=int, default=16, choices=[16, 32], help="image size (default 16)")
    p.add_argument("--loss", choices=["logistic", "hinge", "wasserstein", "least_squares"],
                   help="adversarial loss (default: logistic, the non-saturating one); wasserstein adds WGAN-GP")
    p.add_argument("--lr", type=POSITIVE, help="Adam learning rate of G and D")
    p.add_argument("--r1-gamma", type=NONNEGATIVE, help="R1 weight (0: off)")
    p.add_argument("--r1-interval", type=POSITIVE_INT, help="lazy R1: every this many steps")
    p.add_argument("--ema-kimg", type=NONNEGATIVE, help="EMA generator half-life in thousands of images")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for G and D")
    p.add_argument("--tick", type=POSITIVE_INT, help="steps per tick (one stats.jsonl record)")
    p.add_argument("--snapshot-ticks", type=POSITIVE_INT, help="ticks between sample pictures and checkpoints")
    p.add_argument("--device", default=None, help="default: cuda if available (torchrun: the rank's GPU), else cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default 1 when training on the CPU)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("sample", help="write images from a trained generator: png, npz or webdataset shards")
    p.add_argument("--checkpoint", required=True, help="a run folder or its checkpoint.safetensors")
    p.add_argument("--seeds", required=True, help="e.g. 0-999999 or 0-9,100 (inclusive); one image per seed")
    p.add_argument("--out", required=True, help="output folder (a rerun skips what is complete)")
    p.add_argument("--format", default="png", choices=["png", "npz", "webdataset"])
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64)
    p.add_argument("--truncation", type=FINITE, default=1.0, help="truncation psi (StyleGAN2 generators)")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], help="StyleGAN2 generators (default const)")
    p.add_argument("--shard", default="0/1", help="i/n: write the i-th of n disjoint shards (torchrun splits further)")
    p.add_argument("--shard-size", type=POSITIVE_INT, default=1000, help="images per npz/tar file")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype")
    p.add_argument("--weights", choices=["G_ema", "G"], default="G_ema", help="which generator of the checkpoint")
    p.add_argument("--workers", type=POSITIVE_INT, default=4, help="threads encoding and writing files")
    p.add_argument("--compile", action="store_true", help="torch.compile the generator")
    p.add_argument("--device", default=None, help="default: cuda if available (torchrun: the rank's GPU), else cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_sample)
    p = sub.add_parser("demo", help="the README's main job: train a GAN on the digits and show what it learnt")
    p.add_argument("--out", default="ganfast-demo", help="run folder (default ./ganfast-demo)")
    p.add_argument("--steps", type=POSITIVE_INT, help="training steps (default 3000: a few minutes on a CPU)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default 1 when training on the CPU)")
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    if args.command in ("train", "demo"):
        _set_threads(args.threads, args.device)
    try:
        return args.func(args)
    except Exception as exc:  # what users can fix (bad input, files, folders) as one line; the rest as it is
        from ganfast._dispatch import ImplNotSupportedError
        if os.environ.get("GANFAST_DEBUG", "0") not in ("", "0") or \
                not isinstance(exc, (ValueError, OSError, ImplNotSupportedError)):
            raise
        parser.exit(2, f"ganfast {args.command}: error: {exc} (GANFAST_DEBUG=1 shows the traceback)\n")


if __name__ == "__main__":
    sys.exit(main())
