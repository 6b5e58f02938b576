"""Mode coverage on stacked digits (1000 modes) under one training-time budget per configuration.

    python benchmarks/stacked_digits.py --out runs/stacked --budget 1800          # the issue's three, 30 min each
    python benchmarks/stacked_digits.py --out runs/quick --budget 60 \\
        --config "dcgan=--model dcgan" --config "stylegan2+logistic=--model stylegan2 --loss logistic"

Each configuration is ``NAME=ARGS``: ``ganfast train --dataset stacked-digits`` arguments (model, loss, preset,
batch, ...); ``--common ARGS`` are added to every one. The default configurations are the R3GAN paper's ablation:
``r3gan+rpgan`` (``--model r3gan --loss rpgan``), ``stylegan2+logistic`` and ``r3gan+logistic``. Each run trains in
its own process (``--threads`` torch threads, 2 by default) until the training time summed over its ticks
(``sec_per_tick``: the per-tick evaluation and the pictures excluded) reaches ``--budget`` seconds; it is then
stopped with SIGTERM, which saves its checkpoint. Every tick's record holds the modes covered and the KL of 10k
fakes (the trainer's evaluator on stacked digits) and the share of them read confidently (noise also covers modes:
see ``ganfast.metrics.modes``); the final checkpoint is measured with ``--final-samples``
fakes (``modes``: 26k by default), with the digit classifier's accuracy on as many real images.

Writes ``--results`` (default ``benchmarks/results/stacked_digits.json``, atomically, after every run) and a plot of
modes and KL over training time beside it (``.png``), with the load average before and after each run (the
machine may be shared: the budget is wall time of training, so a loaded machine trains fewer images in it).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONFIGS = ("r3gan+rpgan=--model r3gan --loss rpgan", "stylegan2+logistic=--model stylegan2 --loss logistic",
                   "r3gan+logistic=--model r3gan --loss logistic")
ROOT = Path(__file__).resolve().parent


def parse_config(text: str) -> tuple[str, list[str]]:
    """``NAME=ARGS`` -> ``(NAME, ARGS split as a shell would)``."""
    name, sep, args = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"a configuration is NAME=ARGS, e.g. 'dcgan=--model dcgan'; got {text!r}")
    return name.strip(), shlex.split(args)


def read_ticks(path: Path) -> list[dict]:
    """The complete records of a run's ``stats.jsonl`` (a line being written is left for the next read)."""
    if not path.is_file():
        return []
    ticks = []
    for line in path.read_text().splitlines():
        try:
            ticks.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return ticks


def train_for(name: str, args: list[str], out: Path, budget: float, threads: int, tick: int) -> dict:
    """Runs one configuration until its summed ``sec_per_tick`` reaches ``budget`` (or it ends by itself)."""
    folder = out / name.replace("/", "_")
    command = [sys.executable, "-m", "ganfast", "train", "--dataset", "stacked-digits", "--out", str(folder),
               "--threads", str(threads), "--tick", str(tick), "--steps", str(10 ** 9), "--no-progress", *args]
    print(f"== {name}: {shlex.join(command)}", flush=True)
    load_start, start = os.getloadavg(), time.perf_counter()
    process = subprocess.Popen(command)
    stopped = "ended"
    try:
        while process.poll() is None:
            time.sleep(1.0)
            if sum(t["sec_per_tick"] for t in read_ticks(folder / "stats.jsonl")) >= budget:
                process.send_signal(signal.SIGTERM)
                stopped = "budget"
                process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"{name}: ganfast train exited with status {process.returncode}")
    ticks, elapsed = read_ticks(folder / "stats.jsonl"), 0.0
    curve = []
    for t in ticks:
        elapsed += t["sec_per_tick"]
        curve.append({"train_s": round(elapsed, 2), "kimg": t["kimg"], "step": t["step"], "modes": t.get("modes"),
                      "kl": t.get("kl"), "confident": t.get("confident"), "img_per_s": round(t["img_per_s"], 1)})
    return {"args": args, "command": shlex.join(command), "run": str(folder), "stopped": stopped,
            "wall_s": round(time.perf_counter() - start, 1), "loadavg_1_5_15_start": load_start,
            "loadavg_1_5_15_end": os.getloadavg(), "ticks": curve}


def final_metric(folder: str, metric: str) -> dict:
    """``metric`` (``modes``/``modes<count>``) of the run's checkpoint (its G_ema)."""
    from ganfast.checkpoint import checkpoint_path
    from ganfast.metrics.report import evaluate_snapshot
    record = evaluate_snapshot(checkpoint_path(folder), [metric])[0]
    return {"kimg": record["kimg"], "num_fakes": record["num_fakes"], "num_reals": record["num_reals"],
            **record["results"]}


def plot(report: dict, path: Path) -> None:
    """Modes, KL and the share of fakes read confidently over training time, one line per configuration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, 1, figsize=(7, 8.5), sharex=True)
    for name, run in report["runs"].items():
        ticks = [t for t in run["ticks"] if t["modes"] is not None]
        for ax, key in zip(axes, ("modes", "kl", "confident")):
            ax.plot([t["train_s"] / 60 for t in ticks], [t[key] for t in ticks], marker=".", label=name)
    axes[0].axhline(1000, color="grey", lw=0.8, ls="--")
    axes[0].set_ylabel("modes covered of 1000")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("KL(fakes' modes || uniform)")
    axes[2].set_ylabel("share read confidently")
    axes[2].set_xlabel("training time (min), per-tick evaluation excluded; 10k fakes per point")
    axes[0].legend()
    axes[0].set_title(f"stacked digits, {report['threads']} thread(s), budget {report['budget_s'] / 60:g} min per run")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, path)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="folder of the runs (one sub-folder per configuration)")
    parser.add_argument("--budget", type=float, default=1800.0, help="training seconds per configuration")
    parser.add_argument("--config", action="append", type=parse_config,
                        help="NAME=ARGS, repeatable (default: the issue's three)")
    parser.add_argument("--common", default="", help="arguments added to every configuration")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of each run")
    parser.add_argument("--tick", type=int, default=100, help="steps per tick (one modes/KL point)")
    parser.add_argument("--final-samples", default="modes", help="metric of the final checkpoint: modes (26k "
                        "fakes) or modes<count>, e.g. modes10k")
    parser.add_argument("--results", default=str(ROOT / "results" / "stacked_digits.json"))
    parser.add_argument("--replot", action="store_true", help="only redraw the plot of --results")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(Path(args.results).read_text()), Path(args.results).with_suffix(".png"))
        return 0
    from ganfast._io import atomic_write
    from ganfast.metrics.report import parse_metric
    if parse_metric(args.final_samples)["kind"] != "modes":
        parser.error(f"--final-samples must be modes or modes<count>; got {args.final_samples!r}")
    if args.out is None:
        parser.error("--out is required (except with --replot)")
    configs = args.config or [parse_config(c) for c in DEFAULT_CONFIGS]
    out, results = Path(args.out), Path(args.results)
    import torch
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "torch": torch.__version__, "cpus": os.cpu_count(),
              "threads": args.threads, "budget_s": args.budget, "tick_steps": args.tick,
              "final_metric": args.final_samples, "runs": {}}
    for name, extra in configs:
        run = train_for(name, [*extra, *shlex.split(args.common)], out, args.budget, args.threads, args.tick)
        run["final"] = final_metric(run["run"], args.final_samples)
        run["train_s"] = run["ticks"][-1]["train_s"] if run["ticks"] else 0.0
        report["runs"][name] = run
        final = run["final"]
        print(f"== {name}: {final['modes']} modes of 1000, KL {final['kl']:.4f}, {final['confident']:.1%} read "
              f"confidently ({final['num_fakes']} fakes) after "
              f"{run['train_s'] / 60:.1f} min of training, {final['kimg']:g} kimg; classifier accuracy on real "
              f"stacked digits {final['classifier_acc']:.4f} (per digit {final['classifier_acc_digit']:.4f})",
              flush=True)
        atomic_write(results, lambda f: f.write((json.dumps(report, indent=1) + "\n").encode()))
        plot(report, results.with_suffix(".png"))
    print(f"results: {results} and {results.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
