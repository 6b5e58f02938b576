"""Metrics: mode coverage for 2-D mixtures and stacked digits, Fréchet distance / FID, KID, precision/recall,
density/coverage, exact nearest neighbours by blocked matrix products."""
from .density_coverage import density_coverage
from .digits_classifier import DigitsClassifier, digits_extractor, digits_predictor
from .frechet import FeatureStats, feature_stats, frechet_distance, inception_extractor
from .kid import kernel_inception_distance
from .mixture import mixture_metrics
from .modes import classifier_accuracy, fake_modes, mode_coverage, read_stacked_digits
from .neighbours import ball_counts, knn_radii, nearest_neighbours
from .precision_recall import precision_recall

__all__ = ["DigitsClassifier", "FeatureStats", "ball_counts", "classifier_accuracy", "density_coverage",
           "digits_extractor", "digits_predictor", "fake_modes", "feature_stats",
           "frechet_distance", "inception_extractor", "kernel_inception_distance", "knn_radii", "mixture_metrics",
           "mode_coverage", "nearest_neighbours", "precision_recall", "read_stacked_digits"]
