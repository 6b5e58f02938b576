"""The ``ganfast`` console script: ``info``, ``bench``, ``train``, ``sample``, ``metrics``, ``fid``, ``validate``,
``report``, ``demo``."""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
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


POSITIVE_INT, SEED, NONNEGATIVE_INT = _number(int, 1), _number(int, 0, high=2**32 - 1), _number(int, 0)
PROBABILITY = _number(float, 0, high=1)
POSITIVE, NONNEGATIVE, FINITE = _number(float, 0, strict=True), _number(float, 0), _number(float, -math.inf)


def _resolution(text: str) -> int:
    """An argparse type: a power of two from 4 to 1024."""
    value = _number(int, 4, high=1024)(text)
    if value & (value - 1):
        raise argparse.ArgumentTypeError(f"must be a power of two (4, 8, ..., 1024), got {text!r}")
    return value


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


# ``ganfast train`` options that define a run: stored in its checkpoint, taken from there by ``--resume`` (a
# different value given with it is an error). Those mapping to TrainConfig fields are in _CONFIG_OPTIONS.
_DEFINITION_OPTIONS = ("dataset", "model", "resolution", "mirror", "cbase", "cmax", "map", "fp16_res", "preset")
_CONFIG_OPTIONS = {"seed": ("seed",), "batch_size": ("batch_size",), "loss": ("loss",), "lr": ("lr_g", "lr_d"),
                   "r1_gamma": ("r1_gamma",), "r1_interval": ("r1_interval",), "ema_kimg": ("ema_kimg",),
                   "tick": ("tick_steps",), "pl_weight": ("pl_weight",), "bf16": ("bf16",), "cond": ("cond",),
                   "aug": ("aug",), "p": ("aug_p",), "target": ("aug_target",), "augpipe": ("augpipe",),
                   "r2": ("r2",), "decay_kimg": ("decay_kimg",)}
# What may change between the runs of one training: --steps/--kimg, --snap, --device, --threads, --metrics,
# --logger (and the progress bar); snapshot_ticks and keep_snapshots are the TrainConfig fields of --snap.


def _train_overrides(args) -> dict:
    overrides = {}
    for arg, fields in _CONFIG_OPTIONS.items():
        value = getattr(args, arg)
        if value is not None and arg != "seed":
            overrides.update(dict.fromkeys(fields, value))
    if args.snap is not None:
        overrides.update(snapshot_ticks=args.snap, keep_snapshots=True)
    if args.metrics:
        overrides["keep_snapshots"] = True
    return overrides


def _option(name: str) -> str:
    return "--" + {"map": "map", "tick": "tick"}.get(name, name.replace("_", "-"))


def _same(given, stored) -> bool:
    if isinstance(given, float) or isinstance(stored, float):
        return stored is not None and math.isclose(float(given), float(stored), rel_tol=1e-12)
    return given == stored


def _resumed_run(args, checkpoint: str) -> dict:
    """The keyword arguments of ``build_trainer`` that continue the run whose checkpoint this is: its stored
    definition and TrainConfig (with --snap from the command line); a conflicting option given now is a
    ValueError naming it."""
    from ganfast.checkpoint import checkpoint_extra
    extra = checkpoint_extra(checkpoint)
    run, config = extra.get("run"), extra.get("config")
    if not isinstance(run, dict) or not isinstance(config, dict) or not run:
        raise ValueError(f"resume: {checkpoint} does not record its run's definition (written by an older "
                         "ganfast); continue it with the Python API (Trainer.resume)")
    given = {name: getattr(args, name) for name in (*_DEFINITION_OPTIONS, *_CONFIG_OPTIONS)
             if getattr(args, name, None) is not None}
    from ganfast.data import BUILTIN_DATASETS
    if "dataset" in given and given["dataset"] not in BUILTIN_DATASETS:
        given["dataset"] = os.path.abspath(given["dataset"])
    if any(name in given and not _same(given[name], run.get(name)) for name in ("model", "resolution")):
        shape = f"at {run['resolution']}x{run['resolution']} px" if run.get("resolution") else "on 2-D data"
        asked = ", ".join(f"{_option(n)} {given[n]}" for n in ("model", "resolution") if n in given)
        raise ValueError(f"resume: the checkpoint in {args.out} holds a {run['model']} model {shape}; "
                         f"{asked} does not match it (drop the option, or start a new run)")
    for name, value in given.items():
        stored = [config.get(f) for f in _CONFIG_OPTIONS[name]] if name in _CONFIG_OPTIONS else [run.get(name)]
        if not all(_same(value, s) for s in stored):
            raise ValueError(f"resume: {_option(name)} {value} conflicts with the run's {stored[0]}; a resumed "
                             "run keeps its definition (only --steps/--kimg, --snap, --device, --threads and "
                             "--metrics may change)")
    overrides = {k: v for k, v in config.items() if k not in ("seed", "snapshot_ticks", "keep_snapshots")}
    overrides.update(snapshot_ticks=config.get("snapshot_ticks", 4), keep_snapshots=False)
    overrides.update({k: v for k, v in _train_overrides(args).items() if k in ("snapshot_ticks", "keep_snapshots")})
    return {"dataset_name": run["dataset"], "seed": config["seed"], "resolution": run.get("resolution_asked"),
            "model": run["model"], "mirror": run.get("mirror", False), "cbase": run.get("cbase"),
            "cmax": run.get("cmax"), "map_layers": run.get("map"), "fp16_res": run.get("fp16_res"),
            "preset": run.get("preset"), "bf16_stages": run.get("bf16_stages"), "overrides": overrides}


def _cmd_train(args) -> int:
    import shlex

    import torch.distributed as dist

    from ganfast.checkpoint import CHECKPOINT_NAME
    from ganfast.train.run import build_trainer, describe, init_distributed
    if args.resume and args.out is None:
        raise ValueError("--resume continues the run in --out DIR; --outdir starts new runs")
    if args.resume and args.init:
        raise ValueError("--init starts a new run from another run's networks; --resume continues this one")
    checkpoint = os.path.join(args.out, CHECKPOINT_NAME) if args.out else None
    resuming = args.resume and os.path.isfile(checkpoint)
    if args.out and not args.resume and os.path.isdir(args.out) and os.listdir(args.out):
        raise ValueError(f"--out {args.out} is not empty (an earlier run?); add --resume to continue it, or use "
                         "another folder (--outdir ROOT makes a new numbered one)")
    if args.dataset is None and not resuming:
        raise ValueError("--dataset is required (except with --resume of a run that has a checkpoint)")
    from ganfast.train.loggers import check_loggers, default_loggers
    loggers = default_loggers() if args.logger is None else args.logger
    check_loggers(loggers)
    device = init_distributed(args.device)  # also with --device: torchrun's ranks must join their group
    if resuming:
        definition = _resumed_run(args, checkpoint)
    else:
        definition = {"dataset_name": args.dataset, "seed": args.seed or 0, "resolution": args.resolution,
                      "model": args.model, "mirror": bool(args.mirror), "cbase": args.cbase, "cmax": args.cmax,
                      "map_layers": args.map, "fp16_res": args.fp16_res, "preset": args.preset,
                      "overrides": _train_overrides(args)}
    hook = None
    if args.metrics:
        from ganfast.metrics.report import snapshot_metrics_hook
        hook = snapshot_metrics_hook(args.metrics, inception=args.inception, device=device, vgg16=args.vgg16,
                                     lpips=args.lpips, loggers=tuple(loggers))
    trainer, default_steps = build_trainer(out=args.out, outdir=args.outdir, device=device, threads=args.threads,
                                           progress=not args.no_progress, snapshot_hook=hook, loggers=loggers,
                                           **definition)
    from ganfast.metrics.ppl import PPL_NAME, check_w_space
    if PPL_NAME in (args.metrics or []):  # refused before training, not at the first snapshot
        check_w_space(trainer.G_ema)
    out = trainer.out_dir
    if args.init and trainer.rank == 0:
        print(f"init: G, D and G_ema from {args.init}")
    if args.init:
        trainer.init_from(args.init)
        trainer.run["init"] = os.path.abspath(args.init)
    if trainer.rank == 0:
        print(describe(trainer), flush=True)
        cfg = trainer.config
        print(f"augment   {cfg.aug}" + {
            "ada": f" ({cfg.augpipe}, p from {cfg.aug_p:g} towards r_t = {cfg.aug_target:g})",
            "fixed": f" ({cfg.augpipe}, p = {cfg.aug_p:g})", "diffaug": " (colour, translation, cutout)",
            "noaug": ""}[cfg.aug], flush=True)
        print(f"run       {out}", flush=True)
        print(f"loggers   {', '.join(loggers) or 'none'}" + (f" (tensorboard --logdir {shlex.quote(out)})"
                                                             if "tensorboard" in loggers else ""), flush=True)
    if resuming:
        trainer.resume()
        if trainer.rank == 0:
            print(f"resumed at step {trainer.step} (kimg {trainer.nimg / 1000:g}) from {out}", flush=True)
    elif args.resume and trainer.rank == 0:
        print(f"resume: no checkpoint in {out} yet; starting the run from step 0")
    total = args.steps if args.steps is not None else default_steps
    if args.kimg is not None:
        total = max(1, -(-int(args.kimg * 1000) // trainer.config.batch_size))
    trainer.train(total)
    status = 0
    if trainer.rank == 0 and trainer.interrupted:
        again = f"ganfast train --out {shlex.quote(out)} --resume --steps {total}"
        print(f"{trainer.interrupted}: stopped at step {trainer.step} (kimg {trainer.nimg / 1000:g}); saved "
              f"G, D, G_ema, optimizers and RNG to {os.path.join(out, CHECKPOINT_NAME)}\nresume with: {again}",
              flush=True)
    elif trainer.rank == 0:
        print(f"done: {trainer.step} steps, {trainer.nimg / 1000:.1f} kimg; stats in "
              f"{out}/stats.jsonl, checkpoint in {out}/checkpoint.safetensors")
    if trainer.interrupted == "SIGINT":
        status = 130  # Ctrl-C: the shell's convention (128 + SIGINT); SIGTERM exits 0 so a requeue just resumes
    if dist.is_initialized():
        dist.barrier()  # rank 0's last lines are out before any rank exits (torchrun stops all at a non-zero exit)
        dist.destroy_process_group()
    return status


def _cmd_demo(args) -> int:
    import time

    import ganfast
    from ganfast.info import format_info
    from ganfast.train.run import build_trainer
    print(format_info(ganfast.info()).splitlines()[0])
    if os.path.isdir(args.out) and os.listdir(args.out):
        if not os.path.isfile(os.path.join(args.out, "metrics.json")):
            raise ValueError(f"--out {args.out} is not empty and holds no earlier demo; give another folder")
        print(f"{args.out} holds an earlier demo: it is replaced")
        shutil.rmtree(args.out)
    print("loading the digits; the metrics' digit classifier is trained on the first run, then cached")
    trainer, default_steps = build_trainer("digits", args.out, seed=args.seed, device=args.device,
                                           progress=not args.no_progress, threads=args.threads)
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


def _cmd_report(args) -> int:
    from ganfast.train.run_report import write_report
    print(f"report: {write_report(args.run, args.out)}")
    return 0


def _cmd_sample(args) -> int:
    import torch

    from ganfast.sampling import parse_class, parse_shard, write_samples
    from ganfast.checkpoint import load_generator
    class_index = parse_class(args.class_index)
    index, count = parse_shard(args.shard)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    index, count = index * world + rank, count * world  # torchrun ranks split this shard further
    from ganfast.train.trainer import check_device
    device = args.device or (f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu")
    check_device(torch.device(device))
    # cuBLAS is deterministic with a fixed workspace configuration, read at its first call (README, "Determinism")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    G = load_generator(args.checkpoint, which=args.weights, device=device)
    report = write_samples(G, args.seeds, args.out, fmt=args.format, batch_size=args.batch_size,
                           shard=(index, count), shard_size=args.shard_size, workers=args.workers,
                           progress=not args.no_progress, truncation_psi=args.truncation,
                           noise_mode=args.noise_mode, dtype=args.dtype, compile=args.compile,
                           cuda_graph=args.cuda_graph, class_index=class_index)
    print(f"shard {index}/{count}: {report}")
    return 0


def _cmd_metrics(args) -> int:
    import glob

    import torch

    from ganfast.metrics.report import evaluate_snapshot
    from ganfast.checkpoint import checkpoint_path
    from ganfast.train.loggers import log_metric
    files = [args.checkpoint or args.run]
    if args.run and os.path.isdir(args.run):
        files = sorted(glob.glob(os.path.join(args.run, "network-snapshot-*.safetensors"))) or \
            [checkpoint_path(args.run)]
    elif args.checkpoint:
        files = [checkpoint_path(args.checkpoint)]
    from ganfast.train.trainer import check_device
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(torch.device(device))
    loggers = _metrics_loggers(args.logger, files)
    cache: dict = {}
    try:
        for path in files:
            for record in evaluate_snapshot(path, args.metrics, data=args.data, inception=args.inception,
                                            device=device, cache=cache, vgg16=args.vgg16, mode=args.mode,
                                            lpips=args.lpips, precision=args.precision, overlap=args.overlap,
                                            log=lambda record, earlier: log_metric(loggers, record, earlier)):
                shown = ", ".join(f"{k} {v:.4g}" for k, v in record["results"].items() if isinstance(v, float))
                reals = record["real_images_per_second"]
                print(f"{record['metric']} of {record['snapshot']} (kimg {record['kimg']:g}, {record['features']} "
                      f"features): {shown} ({record['fake_images_per_second']:.0f} fakes/s"
                      + (f", {reals:.0f} reals/s" if reals else "") + ")"
                      + (f"; sent to {', '.join(record['loggers'])}" if record["loggers"] else ""))
    finally:
        loggers.close()
    print(f"appended to {', '.join(f'metric-{n}.jsonl' for n in args.metrics)} in "
          f"{os.path.dirname(os.path.abspath(files[0]))}")
    return 0


def _metrics_loggers(names: list[str] | None, files: list[str]):
    """``ganfast metrics``' loggers, opened on the snapshots' run folder to add points: ``names`` (``--logger``),
    else those the run was trained with, kept in its checkpoint (else in its latest snapshot)."""
    from ganfast.checkpoint import CHECKPOINT_NAME, checkpoint_extra
    from ganfast.train.loggers import check_loggers, open_loggers
    run_dir = os.path.dirname(os.path.abspath(files[0]))
    checkpoint = os.path.join(run_dir, CHECKPOINT_NAME)
    extra = checkpoint_extra(checkpoint if os.path.isfile(checkpoint) else files[-1])
    if names is None:
        names = extra.get("loggers") or []
        try:
            check_loggers(names)
        except ValueError as e:
            raise ValueError(f"{e} (the run was trained with --logger {','.join(names)}; --logger chooses "
                             "others)") from None
    return open_loggers(names, run_dir, None, {"config": extra.get("config"), "run": extra.get("run")})


def _cmd_fid(args) -> int:
    import torch

    from ganfast.metrics.report import fid_between
    from ganfast.train.trainer import check_device
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    check_device(torch.device(device))
    result = fid_between(args.path1, args.path2, inception=args.inception, mode=args.mode, count=args.num,
                         device=device, batch_size=args.batch_size, precision=args.precision, overlap=args.overlap)
    print(f"{' vs '.join(result['num'])}: {result['detector']}, {result['images_per_second']:.0f} images/s "
          f"({result['seconds']:.1f} s)", file=sys.stderr)
    print(f"{result['fid']:.6g}")
    return 0


def _cmd_validate(args) -> int:
    from ganfast.validate import summary, validate
    report = validate(args.synthetic, args.real, holdout=args.holdout, out=args.out, max_samples=args.max_samples,
                      seed=args.seed, features=args.features, seeds=args.seeds, weights=args.weights,
                      privacy_space=args.privacy_space, utility_steps=args.utility_steps, device=args.device,
                      progress=not args.no_progress)
    print(summary(report))
    print(f"report: {os.path.join(args.out, 'report.json')}, {os.path.join(args.out, 'report.md')} and pictures")
    return 0


class _Formatter(argparse.HelpFormatter):
    """Help that shows each option's default (those that are not None or False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


PRECISION_HELP = ("how the detector runs: fast (float32, channels_last), exact (float32, NCHW: the reference "
                  "tools' arithmetic, for parity runs) or bf16 (bfloat16 autocast, channels_last: 2-3x faster on "
                  "a CPU with AVX512-BF16, FID moved by about 1%%)")
OVERLAP_HELP = ("make the image batches (generated fakes) in a thread while the previous batch's features are "
                "extracted (default: on; the features are the same either way)")
MODE_HELP = ("how images reach the detector: legacy_tensorflow (TF1 bilinear; a TorchScript file's own resize, "
             "StyleGAN2-ADA's numbers; default for TorchScript), legacy_pytorch (pytorch-fid's; default for a state "
             "dict) or clean (clean-fid's PIL bicubic)")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=_Formatter, **kwargs)


def _metric_list(text: str) -> list[str]:
    """An argparse type: comma-separated metric names (``ganfast.metrics.report.parse_metric``)."""
    from ganfast.metrics.report import parse_metric
    names = [n for n in text.replace(" ", "").split(",") if n]
    try:
        for name in names:
            parse_metric(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not names:
        raise argparse.ArgumentTypeError("no metric named")
    return names


def _logger_list(text: str) -> list[str]:
    """An argparse type: ``none`` or comma-separated logger backends (``ganfast.train.loggers.parse_loggers``)."""
    from ganfast.train.loggers import parse_loggers
    try:
        return parse_loggers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # the script's arguments, errors and exit status are its own
        from ganfast.run import main as run_main
        return run_main(argv[1:])
    from ganfast import __version__
    from ganfast.metrics.detectors import MODES, PRECISIONS
    from ganfast.sampling import DTYPES, FORMATS, NOISE_MODES
    parser = argparse.ArgumentParser(prog="ganfast", description="Fused kernels for GAN training and sampling.")
    parser.add_argument("--version", action="version", version=f"ganfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
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
    p = sub.add_parser("train", help="train a GAN: ring8, grid25, digits, stacked-digits or your own images / .npz")
    p.add_argument("--dataset", help="ring8, grid25, digits, stacked-digits, an image folder, a .zip or a .npz (a "
                   "resumed run knows its own)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="the run folder (stats.jsonl, samples-*.png, checkpoint.safetensors); it must "
                       "be empty or new, unless --resume")
    where.add_argument("--outdir", help="a folder of runs: this run gets a new numbered folder <NNNNN>-<data>-<model>")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=POSITIVE_INT,
                        help="total steps (default: 8000 for 2-D data, 3000 for images)")
    length.add_argument("--kimg", type=POSITIVE, help="total thousands of real images shown")
    p.add_argument("--seed", type=SEED, help="seed of the weights, latents and data order (default 0)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="global batch (default: 256 for 2-D data, 64 for images)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint, with the "
                   "run's own definition (none yet, e.g. killed before the first snapshot: start afresh)")
    p.add_argument("--init", help="fine-tune: start from the G, D and G_ema of this run folder, checkpoint or "
                   "network snapshot (not its optimizer state or step)")
    p.add_argument("--model", choices=["mlp", "dcgan", "sngan", "stylegan2", "stylegan3-t", "stylegan3-r", "r3gan"],
                   help="default: mlp for 2-D data, dcgan for 16-128 px images, else stylegan2 (above 32 px with "
                   "StyleGAN2-ADA's auto widths, batch and R1 gamma)")
    p.add_argument("--pl-weight", type=NONNEGATIVE, help="path-length penalty weight (stylegan2; 0: off)")
    p.add_argument("--resolution", type=_resolution, help="image size, a power of two (default: the data set's "
                   "own, 16 for digits and stacked-digits); other sizes are resized, non-square images centre-cropped")
    p.add_argument("--mirror", action="store_true", default=None,
                   help="add x-flipped copies of the images (doubles the set)")
    p.add_argument("--cbase", type=POSITIVE_INT, help="stylegan2: channel base (channels = min(cbase / res, cmax)); "
                   "dcgan/sngan: base width")
    p.add_argument("--cmax", type=POSITIVE_INT, help="stylegan2: most channels of a layer")
    p.add_argument("--map", type=POSITIVE_INT, help="stylegan2: mapping network layers")
    p.add_argument("--fp16-res", type=NONNEGATIVE_INT, help="stylegan2: float16 in this many highest "
                   "resolutions (CUDA only)")
    p.add_argument("--loss", choices=["logistic", "hinge", "wasserstein", "least_squares", "rpgan"],
                   help="adversarial loss (default: logistic, the non-saturating one; r3gan: rpgan, R3GAN's "
                   "relativistic pairing); wasserstein adds WGAN-GP")
    from ganfast.train.r3gan import PRESETS as R3GAN_PRESETS
    p.add_argument("--preset", choices=sorted(R3GAN_PRESETS), help="r3gan: every number of the model and the run "
                   "(default: stacked16 for stacked-digits, else tiny; cifar and ffhq64 are the paper's)")
    p.add_argument("--r2", action="store_true", default=None, help="R2 on the fakes beside R1 (gamma/2 each), one "
                   "D pass (r3gan: on)")
    p.add_argument("--decay-kimg", type=NONNEGATIVE, help="R3GAN's cosine schedules of lr, beta2, gamma, EMA and "
                   "p over this many kimg (0: constant; r3gan: the preset's)")
    p.add_argument("--lr", type=POSITIVE, help="Adam learning rate of G and D")
    p.add_argument("--r1-gamma", type=NONNEGATIVE, help="R1 weight (0: off)")
    p.add_argument("--r1-interval", type=POSITIVE_INT, help="lazy R1: every this many steps")
    p.add_argument("--ema-kimg", type=NONNEGATIVE, help="EMA generator half-life in thousands of images")
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast for G and D")
    p.add_argument("--cond", action="store_true", default=None, help="conditional GAN on the data set's labels "
                   "(classes or label vectors); an error if it has none")
    p.add_argument("--tick", type=POSITIVE_INT, help="steps per tick (one stats.jsonl record; default: 500 for "
                   "2-D data, 250 for images)")
    p.add_argument("--snap", type=POSITIVE_INT, help="ticks between sample pictures and checkpoints (default 4); "
                   "given, each of them also keeps network-snapshot-<kimg>.safetensors")
    p.add_argument("--snapshot-ticks", type=POSITIVE_INT, dest="snap", help=argparse.SUPPRESS)  # the older name
    p.add_argument("--metrics", type=_metric_list, help="comma-separated, computed at each snapshot into "
                   "metric-<name>.jsonl: fid50k_full, kid50k_full, pr50k3_full, fd50k_full (digits features "
                   "without an Inception file), or smaller counts such as fd2k, kid500; modes (stacked-digits: modes "
                   "covered of 1000 and KL to uniform, 26k fakes; modes10k: 10k); ppl2_wend (perceptual path length, "
                   "stylegan2/stylegan3)")
    p.add_argument("--inception", help="Inception file for fid/kid/fd: NVlabs' .pkl, a TorchScript .pt or "
                   "pytorch-fid's state dict (default: $GANFAST_INCEPTION; nothing is downloaded)")
    p.add_argument("--vgg16", help="VGG16 file for pr (NVlabs' vgg16.pkl or a torchvision-layout state dict; "
                   "default: $GANFAST_VGG16, else pr uses the Inception features)")
    p.add_argument("--lpips", help="LPIPS-VGG16 file for ppl2_wend: NVlabs' vgg16.pkl / vgg16.pt or an lpips / "
                   "torch-fidelity state dict (default: $GANFAST_LPIPS, else the VGG16 file of pr)")
    p.add_argument("--logger", type=_logger_list, help="live views of the run: none, or comma-separated "
                   "tensorboard (event files in the run folder), wandb (offline unless $WANDB_MODE says otherwise), "
                   "mlflow (<run>/mlruns unless $MLFLOW_TRACKING_URI) (default: tensorboard when installed, else "
                   "none)")
    p.add_argument("--aug", choices=["ada", "fixed", "noaug", "diffaug"],
                   help="D's augmentation (default: ada for images, noaug for 2-D data)")
    p.add_argument("--p", type=PROBABILITY, help="augmentation probability: fixed p, or ada's starting p (default 0)")
    p.add_argument("--target", type=_number(float, 0, strict=True, high=0.999999),
                   help="ada's target for r_t = E[sign(D(real))] (default 0.6)")
    p.add_argument("--augpipe", choices=["blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf",
                                         "bgcfn", "bgcfnc", "r3gan"],
                   help="StyleGAN2-ADA transform set, or R3GAN's mix (default bgc; r3gan presets: r3gan)")
    p.add_argument("--device", default=None, help="default: cuda if available (torchrun: the rank's GPU), else cpu")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default 1 when training on the CPU)")
    p.set_defaults(func=_cmd_train)
    p = sub.add_parser("sample", help="write images from a trained generator: png, npz or webdataset shards")
    p.add_argument("--checkpoint", required=True, help="a run folder or its checkpoint.safetensors")
    p.add_argument("--seeds", required=True, help="e.g. 0-999999 or 0-9,100 (inclusive); one image per seed")
    p.add_argument("--out", required=True, help="output folder (a rerun skips what is complete)")
    p.add_argument("--format", default="png", choices=FORMATS, help="output files")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="images per generator call (default: 256 on a CPU, 64 on a "
                   "GPU)")
    p.add_argument("--truncation", type=FINITE, default=1.0, help="truncation psi (StyleGAN2 and StyleGAN3 "
                   "generators)")
    p.add_argument("--noise-mode", choices=NOISE_MODES, help="StyleGAN2 generators (default const)")
    p.add_argument("--shard", default="0/1", help="i/n: write the i-th of n disjoint shards (torchrun splits further)")
    p.add_argument("--shard-size", type=POSITIVE_INT, default=1000, help="images per npz/tar file")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="autocast dtype")
    p.add_argument("--class", dest="class_index", metavar="K|all",
                   help="class-conditional generators: class K for every image, or 'all' (the default): a class per "
                   "seed drawn from the training set's class frequencies; PNGs go to OUT/class<K>/")
    p.add_argument("--weights", choices=["G_ema", "G"], default="G_ema", help="which generator of the checkpoint")
    p.add_argument("--workers", type=POSITIVE_INT, default=4, help="threads encoding and writing files")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the generator (default: off; measured slower on a CPU, see the README)")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction,
                   help="replay the generator from a CUDA graph (default: on a GPU, unless --noise-mode random)")
    p.add_argument("--device", default=None, help="default: cuda if available (torchrun: the rank's GPU), else cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_sample)
    p = sub.add_parser("metrics", help="FID/KID/precision-recall/mode coverage/perceptual path length of a run's "
                       "network snapshots (or one file)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", help="a run folder (each network-snapshot-*.safetensors, else its checkpoint) or "
                       "one snapshot / checkpoint file")
    which.add_argument("--checkpoint", help="one snapshot or checkpoint file (or a run folder's checkpoint)")
    p.add_argument("--metrics", required=True, type=_metric_list, help="comma-separated, e.g. fid50k_full,"
                   "kid50k_full,pr50k3_full,ppl2_wend; fd/kid/pr with small counts (fd1k) for quick checks; modes "
                   "for stacked-digits")
    p.add_argument("--data", help="the real data (default: the run's own data set)")
    p.add_argument("--inception", help="Inception file: NVlabs' .pkl, a TorchScript .pt or pytorch-fid's state dict "
                   "(default: $GANFAST_INCEPTION)")
    p.add_argument("--vgg16", help="VGG16 file for pr (default: $GANFAST_VGG16, else the Inception features)")
    p.add_argument("--lpips", help="LPIPS-VGG16 file for ppl2_wend: NVlabs' vgg16.pkl / vgg16.pt or an lpips / "
                   "torch-fidelity state dict (default: $GANFAST_LPIPS, else the VGG16 file of pr)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--precision", choices=PRECISIONS, default="fast", help=PRECISION_HELP)
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, help=OVERLAP_HELP)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default 1 on the CPU)")
    p.add_argument("--logger", type=_logger_list, help="where the results go besides metric-<name>.jsonl: none, or "
                   "comma-separated tensorboard, wandb, mlflow (default: the loggers the run was trained with); "
                   "each at its snapshot's kimg, once per snapshot")
    p.set_defaults(func=_cmd_metrics)
    p = sub.add_parser("fid", help="FID of two image sets (folders, zips, npz, digits, or run folders / checkpoints "
                       "to sample from); prints one number")
    p.add_argument("path1")
    p.add_argument("path2")
    p.add_argument("--inception", help="Inception file: NVlabs' .pkl, a TorchScript .pt or pytorch-fid's state dict "
                   "(default: $GANFAST_INCEPTION)")
    p.add_argument("--mode", choices=MODES, help=MODE_HELP)
    p.add_argument("--num", type=_number(int, 2), help="images per set: generated from a checkpoint (default 50000), "
                   "a fixed random subset of a data set (default: all; fewer is refused)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="images per detector call")
    p.add_argument("--precision", choices=PRECISIONS, default="fast", help=PRECISION_HELP)
    p.add_argument("--overlap", action=argparse.BooleanOptionalAction, help=OVERLAP_HELP)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default 1 on the CPU)")
    p.set_defaults(func=_cmd_fid)
    p = sub.add_parser("validate", help="fidelity, utility (TSTR/TRTR) and privacy (memorisation) of synthetic data")
    p.add_argument("--synthetic", required=True, help="a `ganfast sample` folder (png, npz or webdataset), a folder "
                   "of images, or a run folder / checkpoint together with --seeds")
    p.add_argument("--real", required=True, help="the training data: anything `ganfast train --dataset` takes")
    p.add_argument("--holdout", help="real images the generator never saw (needed for memorized_share)")
    p.add_argument("--out", default="ganfast-validate", help="report folder (default ./ganfast-validate)")
    p.add_argument("--seeds", help="with a run folder as --synthetic: generate these seeds (e.g. 0-9999)")
    p.add_argument("--weights", choices=["G_ema", "G"], default="G_ema", help="which generator of the checkpoint")
    p.add_argument("--max-samples", type=_number(int, 6), help="subsample each set to at most this many images")
    p.add_argument("--seed", type=SEED, default=0, help="subsampling, KID subsets, classifier and split seed")
    p.add_argument("--features", help="a TorchScript Inception file, 'digits' or 'pixels' (default: digits "
                   "features for --real digits, pixels otherwise)")
    p.add_argument("--privacy-space", choices=["pixels", "features"], default="pixels",
                   help="space of the distances to the training set (default pixels)")
    p.add_argument("--utility-steps", type=POSITIVE_INT, default=500,
                   help="training steps of each TSTR/TRTR classifier (default 500)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default 1 on the CPU)")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("report", help="one self-contained HTML page of a run: curves, metrics, latest samples, "
                       "configuration")
    p.add_argument("run", help="the run folder")
    p.add_argument("--out", help="the HTML file (default: RUN/report.html)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("run", help="run a script of a rosinality-family code base (pSp, e4e, GFPGAN, ...) with "
                       "ganfast.patch_rosinality() installed: ganfast run train.py ARGS... (or -m MODULE ARGS...)",
                       add_help=False)
    p.add_argument("argv", nargs=argparse.REMAINDER, help="SCRIPT [ARGS...] or -m MODULE [ARGS...]")
    p = sub.add_parser("demo", help="the README's main job: train a GAN on the digits and show what it learnt")
    p.add_argument("--out", default="ganfast-demo", help="run folder (default ./ganfast-demo)")
    p.add_argument("--steps", type=POSITIVE_INT, help="training steps (default 3000: a few minutes on a CPU)")
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--threads", type=POSITIVE_INT, help="torch CPU threads (default 1 when training on the CPU)")
    p.set_defaults(func=_cmd_demo)
    args = parser.parse_args(argv)
    if args.command in ("train", "demo", "validate", "metrics", "fid"):
        from ganfast.train.trainer import set_threads
        set_threads(args.threads, args.device)
        import warnings
        warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"  # data set notices, one line
    try:
        return args.func(args)
    except Exception as exc:  # what users can fix (bad input, files, folders) as one line; the rest as it is
        from ganfast._dispatch import ImplNotSupportedError
        if os.environ.get("GANFAST_DEBUG", "0") not in ("", "0") or \
                not isinstance(exc, (ValueError, OSError, ImplNotSupportedError)):
            raise
        rank = f" (rank {os.environ.get('RANK', '?')})" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        parser.exit(2, f"ganfast {args.command}: error{rank}: {exc} (GANFAST_DEBUG=1 shows the traceback)\n")


if __name__ == "__main__":
    sys.exit(main())
