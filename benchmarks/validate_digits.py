"""Checks ``ganfast.validate`` on the digits with "synthetic" sets whose answer is known.

The 1797 digits (16 px) are split with seed 0 into a training set (797), a holdout (500) and 500 fresh
images. Three synthetic sets are validated against the training set with the holdout as privacy reference:

- ``copies``: 500 training images copied (a generator that memorised): memorized_share should be near 1;
- ``fresh``: the 500 fresh real images (a perfect generator that never saw them): near 0.05;
- ``noisy``: 500 other training images plus Gaussian noise (std 0.3 in [-1, 1] units), labelled, with 25 exact
  training copies planted, written as a labelled png sample folder (``class<K>/<seed // 1000>/seed%08d.png``):
  TSTR next to TRTR, and the planted copies found as near-duplicates.

    PYTHONPATH=. python benchmarks/validate_digits.py [--out /tmp/validate-digits] [--pictures docs/validate]

Then the fresh set's memorized_share over 10 random splits (seeds 0-9, same sizes; pixel-space DCR as in the
reports) shows the spread of the 5%-of-holdout estimate.

Writes each report under ``--out``, the figures to ``benchmarks/results/validate_digits.json`` and the
``noisy`` report's pictures and summary to ``--pictures`` (the README shows them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image

from ganfast.data import digits_with_labels
from ganfast.metrics import nearest_neighbours
from ganfast.validate import summary, validate

KEYS = ["n_synthetic", "n_real", "n_holdout", "features", "fd", "kid", "precision", "recall", "density", "coverage",
        "tstr_accuracy", "trtr_accuracy", "tstr_trtr_ratio", "memorized_share", "memorized_threshold", "dcr_median",
        "holdout_dcr_median", "exact_copies", "near_duplicates_found"]


def write_png_folder(folder: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """A labelled sample folder in the layout of conditional ``ganfast sample`` png output."""
    for seed, (img, k) in enumerate(zip(images, labels.tolist())):
        path = os.path.join(folder, f"class{k}", f"{seed // 1000:05d}", f"seed{seed:08d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(img[0].numpy()).save(path)


def fresh_shares(x: torch.Tensor, splits: int = 10) -> list[float]:
    """memorized_share of 500 fresh images (pixel-space DCR against 797 training images, threshold the 5th
    percentile of 500 holdout images' DCR) for the splits drawn with seeds 0..splits-1."""
    rows, shares = x.flatten(1), []
    for seed in range(splits):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        train, holdout, fresh = rows[order[:797]], rows[order[797:1297]], rows[order[1297:]]
        threshold = np.quantile(nearest_neighbours(holdout, train)[0][:, 0].numpy(), 0.05)
        shares.append(float((nearest_neighbours(fresh, train)[0][:, 0] < threshold).double().mean()))
    return shares


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="/tmp/validate-digits")
    parser.add_argument("--pictures", default="docs/validate")
    parser.add_argument("--results", default="benchmarks/results/validate_digits.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = digits_with_labels(16)
    x = (x * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(x), generator=gen)
    train, holdout, fresh = order[:797], order[797:1297], order[1297:]
    real, hold = (x[train], y[train]), (x[holdout], y[holdout])
    picked = torch.randperm(len(train), generator=gen)
    copies = train[picked[:500]]
    noisy_rows, planted = train[picked[:500]], train[picked[500:525]]
    noise = torch.randn(500, 1, 16, 16, generator=gen) * 0.3 * 127.5
    noisy = (x[noisy_rows].float() + noise).round().clamp(0, 255).to(torch.uint8)
    folder = os.path.join(args.out, "noisy-samples")
    shutil.rmtree(folder, ignore_errors=True)
    write_png_folder(folder, torch.cat([noisy, x[planted]]), torch.cat([y[noisy_rows], y[planted]]))
    cases = {"copies": (x[copies], y[copies]), "fresh": (x[fresh], y[fresh]), "noisy": folder}
    results = {}
    for name, synthetic in cases.items():
        report = validate(synthetic, real, holdout=hold, out=os.path.join(args.out, name), features="digits",
                          progress=False)
        print(f"== {name} ==\n{summary(report)}\n")
        results[name] = {k: report[k] for k in KEYS}
        if name == "noisy":
            planted_found = sum(1 for d in report["near_duplicates"] if d["distance"] == 0)
            results[name]["planted_copies"] = len(planted)
            results[name]["planted_copies_found_at_distance_0"] = planted_found
            os.makedirs(args.pictures, exist_ok=True)
            for picture in ("near_duplicates.png", "pixel_histograms.png"):
                shutil.copy(os.path.join(args.out, name, picture), os.path.join(args.pictures, picture))
            with open(os.path.join(args.pictures, "summary.txt"), "w") as f:
                f.write(summary(report) + "\n")
    shares = fresh_shares(x)
    results["fresh_over_10_splits"] = {"memorized_share": shares, "mean": float(np.mean(shares))}
    print(f"fresh memorized_share over 10 splits: {[round(v, 3) for v in shares]}, mean {np.mean(shares):.3f}")
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump({"split": "digits 16 px, seed 0: train 797, holdout 500, fresh 500", "cases": results}, f,
                  indent=2)
    print(f"figures: {args.results}")


if __name__ == "__main__":
    main()
