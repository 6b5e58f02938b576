"""Conditional GAN on the digits, end to end: does ``ganfast sample --class K`` give digits of class K?

    python benchmarks/conditional_digits.py --out runs/cond-digits              # train, sample, classify
    python benchmarks/conditional_digits.py --out runs/cond-digits --no-train   # an existing run

Trains ``ganfast train --dataset digits --cond`` (one CPU thread by default, as the CLI does), then for every
class K writes ``--samples`` images with ``ganfast sample --class K`` (npz) and reports the share that two
classifiers trained on the real digits assign to class K: ganfast's metric CNN (90% of the digits, see
``ganfast.metrics.digits_classifier``) and, as a second opinion, scikit-learn's logistic regression on all the
real 16 px digits. Writes the figures to ``OUT/conditional_digits.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _run(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ganfast.cli", *args], check=True)
    return time.perf_counter() - start


def _write_digits_zip(path: str) -> None:
    """The 1797 digits (16 px, grey) as ``img<i>.png`` in a zip with StyleGAN2-ADA's ``dataset.json`` labels."""
    import io
    import zipfile

    from PIL import Image

    from ganfast.data import digits_with_labels
    images, labels = digits_with_labels(16)
    pixels = ((images[:, 0] + 1) * 127.5).round().clamp(0, 255).to(dtype=__import__("torch").uint8).numpy()
    with zipfile.ZipFile(path, "w") as archive:
        names = []
        for i, image in enumerate(pixels):
            buffer = io.BytesIO()
            Image.fromarray(image, "L").save(buffer, format="PNG")
            names.append(f"{i // 1000:05d}/img{i:08d}.png")
            archive.writestr(names[-1], buffer.getvalue())
        archive.writestr("dataset.json", json.dumps({"labels": [[n, int(c)] for n, c in zip(names, labels)]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--dataset", default="digits", help="'digits' or the digits as a zip in StyleGAN2-ADA's "
                        "layout (see --write-zip)")
    parser.add_argument("--write-zip", metavar="PATH", help="write the 16 px digits as PNGs in a zip with dataset.json "
                        "labels to PATH first (train on it with --dataset PATH)")
    parser.add_argument("--model", default="dcgan", choices=["dcgan", "sngan", "stylegan2"])
    parser.add_argument("--steps", type=int, help="training steps (default: the CLI's)")
    parser.add_argument("--samples", type=int, default=1000, help="images sampled per class")
    parser.add_argument("--no-train", action="store_true", help="use the checkpoint already in --out")
    args = parser.parse_args()

    import torch
    from sklearn.linear_model import LogisticRegression

    from ganfast.data import digits_with_labels
    from ganfast.metrics import digits_predictor

    report: dict = {"load_average_at_start": os.getloadavg()[0], "dataset": args.dataset}
    if args.write_zip:
        _write_digits_zip(args.write_zip)
    if not args.no_train:
        train = ["train", "--dataset", args.dataset, "--cond", "--model", args.model, "--out", args.out,
                 "--no-progress"]
        report["train_seconds"] = _run(train + (["--steps", str(args.steps)] if args.steps else []))
    real, real_labels = digits_with_labels(16)
    logistic = LogisticRegression(max_iter=2000).fit(real.flatten(1).numpy(), real_labels.numpy())
    cnn = digits_predictor(16)
    per_class = {"cnn": [], "logistic": []}
    for k in range(10):
        folder = os.path.join(args.out, f"samples-class{k}")
        _run(["sample", "--checkpoint", args.out, "--seeds", f"0-{args.samples - 1}", "--class", str(k),
              "--format", "npz", "--shard-size", str(args.samples), "--out", folder, "--no-progress"])
        with np.load(os.path.join(folder, f"seeds00000000-{args.samples - 1:08d}.npz")) as data:
            assert (data["labels"] == k).all()
            uint8 = data["images"]
        images = torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 127.5 - 1
        per_class["cnn"].append(float((cnn(images) == k).float().mean()))
        per_class["logistic"].append(float((logistic.predict(images.flatten(1).numpy()) == k).mean()))
        print(f"class {k}: cnn {per_class['cnn'][-1]:.3f}, logistic regression {per_class['logistic'][-1]:.3f}")
    report.update(per_class=per_class, min_cnn=min(per_class["cnn"]), min_logistic=min(per_class["logistic"]),
                  load_average_at_end=os.getloadavg()[0])
    with open(os.path.join(args.out, "conditional_digits.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
