"""Per-tick evaluations for image data: Fréchet distance and precision/recall in a feature space, per-class
coverage (a fake's class: that of its nearest real), for class-conditional generators the accuracy of a
classifier on the fakes of each class, and mode coverage on stacked digits."""
from __future__ import annotations

from typing import Callable

import torch

from ..metrics import feature_stats, frechet_distance, precision_recall
from ..metrics.frechet import Extractor, extract_features
from ..metrics.modes import fake_modes, stacked_channels_probabilities
from ..metrics.neighbours import nearest_neighbours
from .step import call_with_labels

CLASS_COVERAGE_FLOOR = 0.1  # a class the fakes resemble less than this share of its due counts as dropped


def class_coverage(real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """For each class c: the share of fakes whose nearest real feature vector is of class c, divided by c's share
    of the reals (1: the generator draws the class as often as the data holds it; 0: never)."""
    nearest = nearest_neighbours(fake.double(), real.double(), k=1)[1][:, 0]
    classes = int(labels.max()) + 1
    drawn = torch.bincount(labels[nearest], minlength=classes).double() / len(fake)
    due = torch.bincount(labels, minlength=classes).double() / len(labels)
    return (drawn / due.clamp_min(1e-12)).tolist()


def image_evaluator(real: torch.Tensor, extractor: Extractor, z_dim: int, num_samples: int = 1000, seed: int = 0,
                    fake_c: torch.Tensor | None = None,
                    classify: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    labels: torch.Tensor | None = None):
    """A ``Trainer`` ``evaluate`` callback: ``{"fd", "precision", "recall"}`` of ``num_samples`` fakes vs ``real``;
    with class ``labels`` of the reals also ``class_coverage`` (per class, :func:`class_coverage`) and
    ``classes_dropped`` (those below ``CLASS_COVERAGE_FLOOR``: the mode dropping the trainer's collapse alarm
    reports).

    The fakes come from fixed latents (drawn from ``seed``) and, for a conditional G, the fixed labels ``fake_c``
    (num_samples, c_dim), so successive ticks are comparable; the real features are computed once. With
    one-hot ``fake_c`` and ``classify`` (images -> predicted class indices), the record also holds
    ``class_acc``: the share of fakes classified as the class they were generated for, and
    ``class_acc_per_class``: that share for each class (None for a class with no fakes). A conditional
    generator that ignores its labels scores about 1/K.
    """
    real_features = extract_features(extractor, real)
    real_stats = feature_stats(real_features)
    z = torch.randn(num_samples, z_dim, generator=torch.Generator().manual_seed(seed + 104729))
    if fake_c is not None and fake_c.shape[0] != num_samples:
        raise ValueError(f"fake_c must hold num_samples={num_samples} labels; got shape {tuple(fake_c.shape)}")

    @torch.no_grad()
    def evaluate(G: torch.nn.Module) -> dict:
        device = next(G.parameters()).device
        fake = torch.cat([call_with_labels(G, z[i:i + 500].to(device),
                                           None if fake_c is None else fake_c[i:i + 500].to(device)).float().cpu()
                          for i in range(0, len(z), 500)])
        fake_features = extract_features(extractor, fake)
        record = {"fd": frechet_distance(real_stats, feature_stats(fake_features)),
                  **precision_recall(real_features, fake_features, k=3)}
        if labels is not None:
            coverage = class_coverage(real_features, fake_features, labels)
            record["class_coverage"] = coverage
            record["classes_dropped"] = [c for c, share in enumerate(coverage) if share < CLASS_COVERAGE_FLOOR]
        if classify is not None and fake_c is not None:
            record.update(class_accuracy(classify(fake), fake_c.argmax(dim=1), fake_c.shape[1]))
        return record

    return evaluate


def class_accuracy(predicted: torch.Tensor, intended: torch.Tensor, num_classes: int) -> dict:
    """``class_acc`` (share of ``predicted == intended``) and ``class_acc_per_class`` (the share within each
    intended class, None where there is none)."""
    hit = (predicted.cpu() == intended.cpu()).double()
    per_class = []
    for k in range(num_classes):
        mask = intended.cpu() == k
        per_class.append(hit[mask].mean().item() if mask.any() else None)
    return {"class_acc": hit.mean().item(), "class_acc_per_class": per_class}


def modes_evaluator(z_dim: int, num_samples: int = 10_000, seed: int = 0, fake_c: torch.Tensor | None = None,
                    resolution: int = 16):
    """A ``Trainer`` ``evaluate`` callback on stacked digits: :func:`ganfast.metrics.modes.fake_modes` of
    ``num_samples`` fakes from fixed latents (drawn from ``seed``) and, for a conditional G, fixed labels
    ``fake_c``, clamped to [-1, 1] as saved images are; keys ``modes``, ``kl``, ``confident``."""
    z = torch.randn(num_samples, z_dim, generator=torch.Generator().manual_seed(seed + 104729))
    probabilities = stacked_channels_probabilities(resolution)

    @torch.no_grad()
    def evaluate(G: torch.nn.Module) -> dict:
        device = next(G.parameters()).device
        read = []
        for i in range(0, num_samples, 500):
            c = None if fake_c is None else fake_c[i:i + 500].to(device)
            read.append(probabilities(call_with_labels(G, z[i:i + 500].to(device), c).float().cpu().clamp(-1, 1)))
        record = fake_modes(torch.cat(read))
        return {"modes": record["modes"], "kl": record["kl"], "confident": record["confident"]}

    return evaluate
