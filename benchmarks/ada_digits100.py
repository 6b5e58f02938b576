"""ADA on scarce data: DCGAN on a 100-image subset of the digits, ``--aug ada`` vs ``--aug noaug``, same steps.

    PYTHONPATH=$PWD python benchmarks/ada_digits100.py --out /tmp/ada100 --steps 1200 --ada-kimg 100

Trains one run per mode with the CLI's image defaults (16 px, batch 64, R1 0.1 every 16 steps) on the first
100 digits (``ganfast.data.digits``); the Fréchet distance is measured against all 1797 digits (the same feature
extractor as ``ganfast train --dataset digits``), so it rewards generalising beyond the 100 training images.
Each mode's stats.jsonl goes to OUT/<mode>/, and a summary (p, r_t and fd per tick) to OUT/summary.json.
"""
import argparse
import dataclasses
import json
import os

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--ada-kimg", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", action="append", choices=["ada", "noaug", "diffaug"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    modes = args.mode or ["ada", "noaug"]
    summary = {mode: run(mode, args.out, args.steps, args.ada_kimg, args.seed) for mode in modes}
    with open(os.path.join(args.out, f"summary-{'-'.join(summary)}.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for mode, rows in summary.items():
        print(mode, " ".join(f"{r['step']}:p={r['aug_p']:.3f},rt={r['rt']:.2f},fd={r['fd']:.1f}" for r in rows))


if __name__ == "__main__":
    main()
