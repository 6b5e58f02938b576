"""ADA on scarce data: DCGAN on a 100-image subset of the digits, ``--aug ada`` vs ``--aug noaug``, same steps.

    PYTHONPATH=$PWD python benchmarks/ada_digits100.py --out /tmp/ada100 --steps 1200 --ada-kimg 100

Trains one run per mode with the CLI's image defaults (16 px, batch 64, R1 0.1 every 16 steps) on the first
100 digits (``ganfast.data.digits``); the Fréchet distance is measured against all 1797 digits (the same feature
extractor as ``ganfast train --dataset digits``), so it rewards generalising beyond the 100 training images.
Each mode's stats.jsonl goes to OUT/<mode>/, and a summary (p, r_t and fd per tick) to OUT/summary-<modes>.json.
Each mode's run is also recorded in RESULTS (``--results``, default benchmarks/results/ada_digits100.json) under
"<mode>/seed<seed>": p, r_t and fd per tick, final and best fd, wall time, load average, seed, steps, git commit.
Entries of other modes and seeds already in RESULTS are kept, so runs in parallel processes add up in one file.
"""
import argparse
import dataclasses
import fcntl
import json
import os
import subprocess
import time

import torch

from ganfast.data import Dataset, digits
from ganfast.metrics import digits_extractor
from ganfast.train.evaluators import image_evaluator
from ganfast.train.run import DEFAULTS_IMAGE, build_models
from ganfast.train.trainer import Trainer


def run(mode: str, out: str, steps: int, ada_kimg: float, seed: int) -> list[dict]:
    everything = digits(16)
    data = Dataset("digits100", everything[:100].clone())
    config = dataclasses.replace(DEFAULTS_IMAGE["config"], aug=mode, ada_kimg=ada_kimg, seed=seed, tick_steps=100,
                                 snapshot_ticks=100)
    torch.manual_seed(seed)
    G, D = build_models("dcgan", data)
    evaluate = image_evaluator(everything, digits_extractor(16), G.z_dim, 1000, seed)
    trainer = Trainer(G, D, data, os.path.join(out, mode), config, device="cpu", evaluate=evaluate, progress=False)
    trainer.train(steps)
    with open(os.path.join(out, mode, "stats.jsonl")) as f:
        return [{k: r[k] for k in ("step", "aug_p", "rt", "fd", "d_real_acc")} for r in map(json.loads, f)]


def git_commit() -> str:
    """HEAD of the repository holding this script, with ``+dirty`` when tracked files differ from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                           text=True).stdout.strip()
    return head + ("+dirty" if dirty else "") if head else "unknown"


def record(path: str, key: str, entry: dict) -> None:
    """Adds ``entry`` under ``key`` to the JSON object in ``path``, under a lock so parallel runs do not clash."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        results = json.loads(text) if text.strip() else {}
        results[key] = entry
        f.seek(0)
        f.truncate()
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--ada-kimg", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", action="append", choices=["ada", "noaug", "diffaug"])
    parser.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                          "ada_digits100.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    modes = args.mode or ["ada", "noaug"]
    commit = git_commit()
    summary = {}
    for mode in modes:
        load_start, start = os.getloadavg(), time.perf_counter()
        rows = run(mode, args.out, args.steps, args.ada_kimg, args.seed)
        wall_s, load_end = time.perf_counter() - start, os.getloadavg()
        summary[mode] = rows
        best = min(rows, key=lambda r: r["fd"])
        record(args.results, f"{mode}/seed{args.seed}", {
            "mode": mode, "seed": args.seed, "steps": args.steps, "ada_kimg": args.ada_kimg, "git_commit": commit,
            "wall_s": round(wall_s, 1), "loadavg_1_5_15_start": load_start, "loadavg_1_5_15_end": load_end,
            "fd_final": rows[-1]["fd"], "fd_best": best["fd"], "fd_best_step": best["step"],
            "ticks": [{k: r[k] for k in ("step", "aug_p", "rt", "fd")} for r in rows]})
    with open(os.path.join(args.out, f"summary-{'-'.join(summary)}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for mode, rows in summary.items():
        print(mode, " ".join(f"{r['step']}:p={r['aug_p']:.3f},rt={r['rt']:.2f},fd={r['fd']:.1f}" for r in rows))


if __name__ == "__main__":
    main()
